package executor

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/bzip2"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"

	"github.com/kiln-build/kiln/internal/archive"
)

// tryExtract unpacks src into Dest when it is a tar archive (plain or compressed), as ADD does
// for local sources. It reports false, without error, for any other file.
func (c *copier) tryExtract(src string) (bool, error) {
	f, err := os.Open(src)
	if err != nil {
		return false, fmt.Errorf("%s: opening %s: %w", c.spec.Instruction, src, err)
	}
	defer f.Close()
	r, ok, err := decompressed(bufio.NewReader(f))
	if err != nil || !ok {
		return false, nil
	}
	defer r.Close()
	br := bufio.NewReaderSize(r, 1024)
	head, _ := br.Peek(512)
	if !isTar(head) {
		return false, nil
	}
	dst, err := c.mkdirAll(c.spec.Dest)
	if err != nil {
		return true, err
	}
	opts := archive.ExtractOptions{LiteralWhiteouts: true}
	if o := c.spec.Chown; o != nil {
		opts.Owner = &[2]int{o.UID, o.GID}
	}
	if err := archive.Extract(c.ctx, br, dst, opts); err != nil {
		return true, fmt.Errorf("%s: extracting %s: %w", c.spec.Instruction, filepath.Base(src), err)
	}
	return true, nil
}

// decompressed wraps r in the decompressor its magic bytes call for.
func decompressed(r *bufio.Reader) (io.ReadCloser, bool, error) {
	magic, _ := r.Peek(6)
	switch {
	case bytes.HasPrefix(magic, []byte{0x1f, 0x8b}):
		z, err := gzip.NewReader(r)
		if err != nil {
			return nil, false, err
		}
		return z, true, nil
	case bytes.HasPrefix(magic, []byte("BZh")):
		return io.NopCloser(bzip2.NewReader(r)), true, nil
	case bytes.HasPrefix(magic, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		z, err := zstd.NewReader(r)
		if err != nil {
			return nil, false, err
		}
		return z.IOReadCloser(), true, nil
	case bytes.HasPrefix(magic, []byte{0xfd, '7', 'z', 'X', 'Z', 0}):
		return nil, false, nil // xz: copied as a plain file (no xz decoder in kiln yet)
	}
	return io.NopCloser(r), true, nil
}

func isTar(head []byte) bool {
	if len(head) < 512 {
		return false
	}
	if string(head[257:262]) == "ustar" {
		return true
	}
	_, err := tar.NewReader(bytes.NewReader(head)).Next()
	return err == nil && head[156] != 0 // old v7 tar with a type flag
}

// FetchSpec is an ADD from an http(s) URL.
type FetchSpec struct {
	URL string
	// Checksum is the expected "sha256:<hex>" of the body (ADD --checksum), or "".
	Checksum string
	// TempDir holds the download until it is copied into the rootfs.
	TempDir string
	// Client makes the request; nil means http.DefaultClient.
	Client *http.Client
}

// Fetch downloads an ADD URL source into spec.TempDir and returns the directory holding it and
// the file's name (the last path element of the URL), ready to be copied like a local file:
// mode 0600 and the Last-Modified time, as Docker does. Archives from URLs are never extracted.
func Fetch(ctx context.Context, spec FetchSpec) (dir, name string, err error) {
	u, err := url.Parse(spec.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") {
		return "", "", fmt.Errorf("ADD %s: not an http or https URL", spec.URL)
	}
	name = path.Base(u.Path)
	if name == "/" || name == "." || name == "" {
		name = "index.html"
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, spec.URL, nil)
	if err != nil {
		return "", "", fmt.Errorf("ADD %s: %w", spec.URL, err)
	}
	client := spec.Client
	if client == nil {
		client = http.DefaultClient
	}
	resp, err := client.Do(req)
	if err != nil {
		return "", "", fmt.Errorf("ADD %s: %w", spec.URL, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", "", fmt.Errorf("ADD %s: server answered %s", spec.URL, resp.Status)
	}
	dir, err = os.MkdirTemp(spec.TempDir, "add-")
	if err != nil {
		return "", "", fmt.Errorf("ADD %s: %w", spec.URL, err)
	}
	p := filepath.Join(dir, name)
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return "", "", fmt.Errorf("ADD %s: %w", spec.URL, err)
	}
	h := sha256.New()
	_, err = io.Copy(io.MultiWriter(f, h), resp.Body)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return "", "", fmt.Errorf("ADD %s: downloading: %w", spec.URL, err)
	}
	if spec.Checksum != "" {
		got := "sha256:" + hex.EncodeToString(h.Sum(nil))
		if !strings.EqualFold(got, spec.Checksum) {
			return "", "", fmt.Errorf("ADD %s: checksum mismatch: expected %s, got %s", spec.URL, spec.Checksum, got)
		}
	}
	if lm, err := http.ParseTime(resp.Header.Get("Last-Modified")); err == nil {
		_ = os.Chtimes(p, lm, lm)
	} else {
		now := time.Unix(0, 0)
		_ = os.Chtimes(p, now, now)
	}
	return dir, name, nil
}
