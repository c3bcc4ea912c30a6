package install

import (
	"context"
	"errors"
	"fmt"
	"io/fs"

	"helm.sh/helm/v3/pkg/action"
	"helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/chart/loader"

	"teledock.dev/teledock/cluster"
)

// loadChart loads the embedded chart and stamps version on it, so that the default image tag is
// the CLI's own version.
func loadChart(version string) (*chart.Chart, error) {
	var files []*loader.BufferedFile
	err := fs.WalkDir(cluster.Chart(), ".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := fs.ReadFile(cluster.Chart(), path)
		if err != nil {
			return err
		}
		files = append(files, &loader.BufferedFile{Name: path, Data: data})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read embedded chart: %w", err)
	}
	c, err := loader.LoadFiles(files)
	if err != nil {
		return nil, fmt.Errorf("load embedded chart: %w", err)
	}
	if version != "" {
		c.Metadata.AppVersion = version
		// A chart version must be SemVer; a development build's version may not be, and then the
		// chart keeps its own.
		chartVersion := c.Metadata.Version
		c.Metadata.Version = version
		if err := c.Metadata.Validate(); err != nil {
			c.Metadata.Version = chartVersion
		}
	}
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("embedded chart: %w", err)
	}
	return c, nil
}

// Render returns the manifests Install would apply for cfg, without a cluster (like `helm
// template`). Only Namespace, Release, Version and Values of cfg are used.
func Render(cfg Config) (string, error) {
	if cfg.Namespace == "" {
		return "", errors.New("render: no namespace")
	}
	if cfg.Release == "" {
		cfg.Release = DefaultRelease
	}
	c, err := loadChart(cfg.Version)
	if err != nil {
		return "", err
	}
	in := action.NewInstall(new(action.Configuration))
	in.ClientOnly = true
	in.DryRun = true
	in.ReleaseName = cfg.Release
	in.Namespace = cfg.Namespace
	in.DisableHooks = true
	rel, err := in.RunWithContext(context.Background(), c, cfg.Values)
	if err != nil {
		return "", fmt.Errorf("render chart: %w", err)
	}
	return rel.Manifest, nil
}
