// Command etcd is upstream etcd's server, built from the go.etcd.io/etcd/server/v3 module.
// etcd's own main package lives in the repository's root module, which replaces its
// siblings with relative paths and so cannot be built from the module proxy; etcdmain is
// the same entry point it calls.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
