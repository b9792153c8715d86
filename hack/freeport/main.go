// Command freeport prints N free TCP ports on 127.0.0.1, separated by spaces, for the local
// cluster scripts.
package main

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
)

func main() {
	n := 1
	if len(os.Args) > 1 {
		var err error
		if n, err = strconv.Atoi(os.Args[1]); err != nil || n < 1 {
			fmt.Fprintln(os.Stderr, "usage: freeport [count]")
			os.Exit(2)
		}
	}
	// Ports are drawn below the kernel's ephemeral range (32768-60999 by default): a port
	// from there (what ":0" gives) can be taken as the source port of any outgoing
	// connection between this choice and the server's bind, which failed a CI run
	// ("bind: address already in use" for kube-apiserver).
	ports := make([]string, 0, n)
	for tries := 0; len(ports) < n; tries++ {
		if tries > 10000 {
			fmt.Fprintln(os.Stderr, "no free port found in 20000-32767")
			os.Exit(1)
		}
		port := 20000 + rand.IntN(12768)
		// Held open until all are chosen, so the same port is not returned twice.
		l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port))
		if err != nil {
			continue
		}
		defer l.Close()
		ports = append(ports, strconv.Itoa(port))
	}
	fmt.Println(strings.Join(ports, " "))
}
