package main

import (
	"fmt"
	"os"
	"strconv"
	"time"

	"github.com/spf13/pflag"

	"github.com/kiln-build/kiln/internal/build"
	"github.com/kiln-build/kiln/internal/cache"
	"github.com/kiln-build/kiln/internal/image"
)

// commonFlags are the flags kiln build and kiln s2i build share, named alike: where the image
// goes and how, the cache, the store, and how registries are reached.
type commonFlags struct {
	network, format, root, compression, sourceDateEpoch string
	outputs, cacheFrom, cacheTo                         []string
	disableCompression                                  bool
	registry                                            registryFlags
}

// register adds the shared flags to fl, but --network, whose help says what it applies to.
func (c *commonFlags) register(fl *pflag.FlagSet) {
	fl.StringArrayVar(&c.cacheFrom, "cache-from", nil, "import a build cache: type=registry,ref=REPO or type=local,src=DIR (repeatable)")
	fl.StringArrayVar(&c.cacheTo, "cache-to", nil, "export the build cache: type=registry,ref=REPO or type=local,dest=DIR, with mode=min|max (repeatable)")
	fl.StringVar(&c.format, "format", "oci", "image format: oci or docker")
	fl.StringArrayVarP(&c.outputs, "output", "o", nil, "also write the image: type=oci,dest=DIR|FILE.tar or type=docker,dest=FILE.tar")
	fl.StringVar(&c.root, "root", "", "store directory (default ~/.local/share/kiln)")
	fl.StringVar(&c.compression, "compression", "gzip", "layer compression: gzip or zstd (zstd needs --format oci)")
	fl.BoolVarP(&c.disableCompression, "disable-compression", "D", true,
		"keep the layers of an image that only goes to the local store uncompressed; they are compressed when they leave it")
	fl.StringVar(&c.sourceDateEpoch, "source-date-epoch", os.Getenv("SOURCE_DATE_EPOCH"), "unix time for created times and clamped file mtimes (default $SOURCE_DATE_EPOCH)")
	c.registry.register(fl)
}

// apply checks the shared flags and sets them in req.
func (c *commonFlags) apply(req *build.Request) error {
	var err error
	if req.Registry, err = c.registry.options(); err != nil {
		return err
	}
	for _, v := range c.cacheFrom {
		spec, err := cache.ParseSpec(v, false)
		if err != nil {
			return err
		}
		req.CacheFrom = append(req.CacheFrom, spec)
	}
	for _, v := range c.cacheTo {
		spec, err := cache.ParseSpec(v, true)
		if err != nil {
			return err
		}
		req.CacheTo = append(req.CacheTo, spec)
	}
	req.StoreRoot = c.root
	if req.StoreRoot == "" {
		req.StoreRoot = build.DefaultStoreRoot()
	}
	if req.Format, err = image.ParseFormat(c.format); err != nil {
		return err
	}
	switch image.Compression(c.compression) {
	case image.Gzip, image.Zstd:
		req.Compression = image.Compression(c.compression)
		req.DisableCompression = c.disableCompression
	default:
		return fmt.Errorf("--compression %s: use gzip or zstd", c.compression)
	}
	switch c.network {
	case "host", "none":
		req.Network = c.network
	default:
		return fmt.Errorf("--network %s: use host or none", c.network)
	}
	for _, o := range c.outputs {
		out, err := build.ParseOutput(o)
		if err != nil {
			return err
		}
		req.Outputs = append(req.Outputs, out)
	}
	if c.sourceDateEpoch != "" {
		sec, err := strconv.ParseInt(c.sourceDateEpoch, 10, 64)
		if err != nil || sec < 0 {
			return fmt.Errorf("--source-date-epoch %q: give seconds since 1970", c.sourceDateEpoch)
		}
		t := time.Unix(sec, 0).UTC()
		req.SourceDateEpoch = &t
	}
	return nil
}
