package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/client"

	"teledock.dev/teledock/cluster/install"
	"teledock.dev/teledock/daemoncontainer/launcher"
	"teledock.dev/teledock/internal/imageload"
	"teledock.dev/teledock/internal/images"
	"teledock.dev/teledock/internal/registry"
	"teledock.dev/teledock/internal/version"
)

// imageEngine is the part of the Docker API that brings teledock's own images to the engine and
// to local clusters' nodes.
type imageEngine interface {
	imageload.Docker
	registry.PushAPI
	ImageInspect(ctx context.Context, image string, opts ...client.ImageInspectOption) (image.InspectResponse, error)
	ServerVersion(ctx context.Context) (types.Version, error)
}

var _ imageEngine = (*client.Client)(nil)

// carriedFunc returns the archive of one of the CLI's own images (images.Carried).
type carriedFunc func(s images.Spec, version, arch string) (*images.Archive, error)

// ensureDaemonImage loads the default daemon image from the CLI when the engine lacks it. An image
// the user gave is used as given; a CLI that carries no images leaves the error to ImageNotFound.
func ensureDaemonImage(ctx context.Context, d deps, given bool) error {
	if given {
		return nil
	}
	eng, err := d.images()
	if err != nil {
		return err
	}
	return ensureEngineImage(ctx, d, eng, images.Daemon)
}

// clusterImages brings the default traffic-manager and traffic-agent images (wanted; the user's
// own images are used as given) to the cluster install targets, and returns the registry host their
// references must name ("" for the plain names). In order: a --registry the user gave; the nodes of
// a local cluster that take images without a registry (kind, k3d, minikube on the local engine,
// Docker Desktop); the registry the cluster advertises (KEP-1755). Anything else is an error that
// names the choices.
func clusterImages(ctx context.Context, d deps, cfg install.Config, wanted []images.Spec, registryFlag string) (string, error) {
	if len(wanted) == 0 {
		return "", nil
	}
	if registryFlag != "" {
		if err := pushImages(ctx, d, registryFlag, wanted); err != nil {
			return "", err
		}
		return registryFlag, nil
	}
	desc, err := d.describe(ctx, cfg)
	if err != nil {
		// Install itself reports a kubeconfig that cannot be used, with its usual message.
		d.log.Debug("describing the cluster", "err", err)
		return "", nil
	}
	if loaded, err := bringClusterImages(ctx, d, desc, wanted); err != nil || loaded {
		return "", err
	}
	if h := desc.Registry; h != nil {
		fmt.Fprintf(d.stderr, "The cluster advertises the registry %s (kube-public/local-registry-hosting)\n", h.Host)
		if err := pushImages(ctx, d, h.Host, wanted); err != nil {
			return "", err
		}
		return h.PullHost(), nil
	}
	var refs []string
	for _, s := range wanted {
		refs = append(refs, s.Ref(version.Version))
	}
	return "", fmt.Errorf("%w: %s (context %s) is not a local cluster teledock can load images into and advertises no registry, so its nodes could not pull %s",
		errNoImageRoute, desc.Server, desc.Context, strings.Join(refs, " or "))
}

// pushImages pushes the default images to host, from the engine, loading them from the CLI first
// where the engine lacks them.
func pushImages(ctx context.Context, d deps, host string, wanted []images.Spec) error {
	eng, err := d.images()
	if err != nil {
		return err
	}
	auth, err := registry.Credentials(host)
	if err != nil {
		return err
	}
	for _, s := range wanted {
		local := s.Ref(version.Version)
		if err := ensureEngineImage(ctx, d, eng, s); err != nil {
			return err
		}
		remote := host + "/" + local
		fmt.Fprintf(d.stderr, "Pushing %s\n", remote)
		if err := registry.Push(ctx, eng, local, remote, auth); err != nil {
			return fmt.Errorf("%w: %w", errImagePush, err)
		}
	}
	return nil
}

// ensureEngineImage loads one of the CLI's images into the engine unless it has it.
func ensureEngineImage(ctx context.Context, d deps, eng imageEngine, s images.Spec) error {
	ref := s.Ref(version.Version)
	if _, err := eng.ImageInspect(ctx, ref); err == nil {
		return nil
	} else if !cerrdefs.IsNotFound(err) {
		return fmt.Errorf("inspect image %s: %w", ref, err)
	}
	sv, err := eng.ServerVersion(ctx)
	if err != nil {
		return fmt.Errorf("docker version: %w", err)
	}
	a, err := d.carried(s, version.Version, cmp.Or(sv.Arch, runtime.GOARCH))
	if err != nil {
		return fmt.Errorf("%w: %s: %w", launcher.ErrImageNotFound, ref, err)
	}
	fmt.Fprintf(d.stderr, "Loading %s into the local Docker engine\n", ref)
	if err := imageload.LoadEngine(ctx, eng, a); err != nil {
		return fmt.Errorf("%w: %w", errImageLoad, err)
	}
	return nil
}

// bringClusterImages loads the wanted images into a local cluster's nodes or the engine its
// Kubernetes shares; it reports false when the cluster is none of those.
func bringClusterImages(ctx context.Context, d deps, desc install.Cluster, wanted []images.Spec) (bool, error) {
	eng, err := d.images()
	if err != nil {
		d.log.Debug("no Docker engine: not loading images", "err", err)
		return false, nil
	}
	target := imageload.Target{Context: desc.Context, Server: desc.Server}
	for _, n := range desc.Nodes {
		target.Nodes = append(target.Nodes, imageload.NodeInfo{Name: n.Name, Runtime: n.Runtime, Arch: n.Arch})
	}
	cl, err := imageload.Detect(ctx, eng, target)
	if err != nil {
		// Docker may simply not run: a remote cluster needs none.
		d.log.Debug("looking for local clusters", "err", err)
		return false, nil
	}
	if cl.Type == imageload.Unknown {
		d.log.Debug("not loading images", "reason", cl.Why)
		return false, nil
	}
	arch := cl.Arch
	if arch == "" {
		sv, err := eng.ServerVersion(ctx)
		if err != nil {
			return false, fmt.Errorf("docker version: %w", err)
		}
		arch = cmp.Or(sv.Arch, runtime.GOARCH)
	}
	var archives []imageload.Archive
	for _, s := range wanted {
		a, err := d.carried(s, version.Version, arch)
		if errors.Is(err, images.ErrNotCarried) {
			// The nodes may have them already (kind load, k3d image import); if not, the wait for
			// the manager says that the image is missing.
			var refs []string
			for _, s := range wanted {
				refs = append(refs, s.Ref(version.Version))
			}
			fmt.Fprintf(d.stderr, "Not loading images into %s cluster %s: %v (build teledock with `make build`); its nodes need %s already\n",
				cl.Type, cl.Name, err, strings.Join(refs, " and "))
			return true, nil
		}
		if err != nil {
			return false, err
		}
		archives = append(archives, a)
	}
	err = imageload.Load(ctx, eng, cl, archives, func(e imageload.Event) {
		if e.Node == "" {
			fmt.Fprintf(d.stderr, "Loading %s into the local Docker engine (%s)\n", e.Image, cl.Type)
		} else {
			fmt.Fprintf(d.stderr, "Loading %s into node %s\n", e.Image, e.Node)
		}
	})
	if err != nil {
		return false, fmt.Errorf("%w: %s cluster %s: %w", errImageLoad, cl.Type, cl.Name, err)
	}
	return true, nil
}
