// Package cluster holds the traffic-manager's Helm chart, embedded so that `teledock install` needs
// nothing but its own binary.
package cluster

import (
	"embed"
	"io/fs"
)

// all: keeps the chart's dot files (.helmignore), which helm reads.
//
//go:embed all:chart
var chartFS embed.FS

// Chart returns the chart's files, rooted at the chart directory (Chart.yaml, values.yaml,
// templates/...).
func Chart() fs.FS {
	sub, err := fs.Sub(chartFS, "chart")
	if err != nil {
		panic(err) // "chart" is a valid path and embedded, so this cannot happen
	}
	return sub
}
