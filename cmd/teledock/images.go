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
	"teledock.dev/teledock/internal/version"
)

// imageEngine is the part of the Docker API that brings teledock's own images to the engine and
// to local clusters' nodes.
type imageEngine interface {
	imageload.Docker
	ImageInspect(ctx context.Context, image string, opts ...client.ImageInspectOption) (image.InspectResponse, error)
	ServerVersion(ctx context.Context) (types.Version, error)
}

var _ imageEngine = (*client.Client)(nil)

// carriedFunc returns the archive of one of the CLI's own images (images.Carried).
type carriedFunc func(s images.Spec, version, arch string) (*images.Archive, error)

// ensureDaemonImage loads the default daemon image from the CLI when the engine lacks it. An image
// the user gave is used as given; a CLI that carries no images leaves the error to ImageNotFound.
func ensureDaemonImage(ctx context.Context, d deps, ref string, given bool) error {
	if given {
		return nil
	}
	eng, err := d.images()
	if err != nil {
		return err
	}
	if _, err := eng.ImageInspect(ctx, ref); err == nil {
		return nil
	} else if !cerrdefs.IsNotFound(err) {
		return fmt.Errorf("inspect image %s: %w", ref, err)
	}
	sv, err := eng.ServerVersion(ctx)
	if err != nil {
		return fmt.Errorf("docker version: %w", err)
	}
	a, err := d.carried(images.Daemon, version.Version, cmp.Or(sv.Arch, runtime.GOARCH))
	if err != nil {
		return fmt.Errorf("%w: %s: %w", launcher.ErrImageNotFound, ref, err)
	}
	fmt.Fprintf(d.stderr, "Loading %s into the local Docker engine\n", ref)
	if err := imageload.LoadEngine(ctx, eng, a); err != nil {
		return fmt.Errorf("%w: %w", errImageLoad, err)
	}
	return nil
}

// bringClusterImages gets the default traffic-manager and traffic-agent images to the cluster
// install targets, when it is one whose nodes take them without a registry (kind, k3d, minikube
// on the local engine, Docker Desktop). Elsewhere it does nothing: the nodes pull them.
func bringClusterImages(ctx context.Context, d deps, cfg install.Config, wanted []images.Spec) error {
	if len(wanted) == 0 {
		return nil // the user's own images
	}
	eng, err := d.images()
	if err != nil {
		d.log.Debug("no Docker engine: not loading images", "err", err)
		return nil
	}
	desc, err := d.describe(ctx, cfg)
	if err != nil {
		// Install itself reports a kubeconfig that cannot be used, with its usual message.
		d.log.Debug("describing the cluster", "err", err)
		return nil
	}
	target := imageload.Target{Context: desc.Context, Server: desc.Server}
	for _, n := range desc.Nodes {
		target.Nodes = append(target.Nodes, imageload.NodeInfo{Name: n.Name, Runtime: n.Runtime, Arch: n.Arch})
	}
	cl, err := imageload.Detect(ctx, eng, target)
	if err != nil {
		// Docker may simply not run: a remote cluster needs none.
		d.log.Debug("looking for local clusters", "err", err)
		return nil
	}
	if cl.Type == imageload.Unknown {
		d.log.Debug("not loading images", "reason", cl.Why)
		return nil
	}
	arch := cl.Arch
	if arch == "" {
		sv, err := eng.ServerVersion(ctx)
		if err != nil {
			return fmt.Errorf("docker version: %w", err)
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
			return nil
		}
		if err != nil {
			return err
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
		return fmt.Errorf("%w: %s cluster %s: %w", errImageLoad, cl.Type, cl.Name, err)
	}
	return nil
}
