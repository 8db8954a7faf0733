// Command inventory is the program of the go-cache-mount benchmark workload:
// a small HTTPS JSON service that is compiled, not run, by the benchmark. It
// imports net/http, crypto/tls, encoding/json, html/template and friends so
// that compiling it without a build cache is real work.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"net/http"
	"os"
	"os/signal"
	"time"

	"example.com/inventory/internal/certs"
	"example.com/inventory/internal/inventory"
	"example.com/inventory/internal/report"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:8443", "listen address")
	selftest := flag.Bool("selftest", false, "check the service in memory and exit")
	flag.Parse()

	inv := inventory.New()
	inv.Put(inventory.Item{SKU: "kiln-1", Name: "kiln", Quantity: 3, Price: 1999})
	inv.Put(inventory.Item{SKU: "shelf-2", Name: "drying shelf", Quantity: 12, Price: 450})
	if *selftest {
		if err := selfTest(inv); err != nil {
			log.Fatalf("self test: %v", err)
		}
		fmt.Println("inventory: self test passed")
		return
	}
	if err := serve(*addr, inv); err != nil {
		log.Fatal(err)
	}
}

// selfTest renders the report and checks the certificate generator.
func selfTest(inv *inventory.Inventory) error {
	if _, err := certs.SelfSigned("localhost", time.Hour); err != nil {
		return err
	}
	return report.Render(os.Stdout, inv.List())
}

// serve runs the HTTPS service until interrupted.
func serve(addr string, inv *inventory.Inventory) error {
	cert, err := certs.SelfSigned("localhost", 24*time.Hour)
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.Handle("/items", inventory.Handler(inv))
	mux.HandleFunc("/report", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		if err := report.Render(w, inv.List()); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
		}
	})
	srv := &http.Server{Addr: addr, Handler: mux, TLSConfig: certs.ServerConfig(cert), ReadHeaderTimeout: 5 * time.Second}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	go func() {
		<-ctx.Done()
		shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(shutdown)
	}()
	log.Printf("inventory: listening on https://%s", addr)
	if err := srv.ListenAndServeTLS("", ""); err != http.ErrServerClosed {
		return err
	}
	return nil
}
