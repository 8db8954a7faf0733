// Command tcpfwd forwards TCP connections: tcpfwd LISTEN=TARGET...
//
// The test cluster (test/cluster) runs it to make services that listen on the host's loopback
// (the plain test registry on 127.0.0.1:5000) reachable from pods, at the address of the
// cluster's bridge (10.244.0.1:5000 by default), which is not routed off the machine.
// It stops on SIGTERM or SIGINT.
package main

import (
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"
)

func main() {
	log.SetFlags(log.LstdFlags | log.Lmicroseconds)
	log.SetPrefix("tcpfwd: ")
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: tcpfwd LISTEN_ADDR=TARGET_ADDR...")
		os.Exit(2)
	}
	var listeners []net.Listener
	for _, arg := range os.Args[1:] {
		from, to, ok := strings.Cut(arg, "=")
		if !ok || from == "" || to == "" {
			log.Fatalf("bad argument %q: want LISTEN_ADDR=TARGET_ADDR", arg)
		}
		l, err := net.Listen("tcp", from)
		if err != nil {
			log.Fatalf("listen on %s: %v", from, err)
		}
		log.Printf("forwarding %s to %s", from, to)
		listeners = append(listeners, l)
		go serve(l, to)
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	s := <-sig
	log.Printf("%v: stopping", s)
	for _, l := range listeners {
		l.Close()
	}
}

func serve(l net.Listener, target string) {
	for {
		c, err := l.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			log.Printf("accept on %s: %v", l.Addr(), err)
			time.Sleep(100 * time.Millisecond)
			continue
		}
		go forward(c, target)
	}
}

func forward(c net.Conn, target string) {
	defer c.Close()
	t, err := net.DialTimeout("tcp", target, 10*time.Second)
	if err != nil {
		log.Printf("%s: dial %s: %v", c.RemoteAddr(), target, err)
		return
	}
	defer t.Close()
	var wg sync.WaitGroup
	wg.Add(2)
	go pipe(&wg, t, c)
	go pipe(&wg, c, t)
	wg.Wait()
}

// pipe copies src to dst, then half-closes dst so that the peer sees the end of the stream.
func pipe(wg *sync.WaitGroup, dst, src net.Conn) {
	defer wg.Done()
	_, _ = io.Copy(dst, src)
	if tc, ok := dst.(*net.TCPConn); ok {
		_ = tc.CloseWrite()
	} else {
		dst.Close()
	}
}
