// Command etcd is etcd's server built from its Go module, pinned by the k8s tools module so the
// cluster's etcd matches the version Kubernetes itself was tested with.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
