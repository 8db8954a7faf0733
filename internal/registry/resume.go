package registry

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"net/http"
	"strings"
	"sync"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

// resumableImage is a pulled image whose layer downloads survive dropped connections and
// stalls: a download that breaks off is resumed where it stopped with a Range request, and
// the whole blob is checked against its digest at the end.
type resumableImage struct {
	v1.Image
	c    *Client
	ctx  context.Context
	repo name.Repository

	once   sync.Once
	client *http.Client
	err    error
}

func (c *Client) resumable(ctx context.Context, img v1.Image, repo name.Repository) v1.Image {
	return &resumableImage{Image: img, c: c, ctx: ctx, repo: repo}
}

// Layers implements v1.Image.
func (ri *resumableImage) Layers() ([]v1.Layer, error) {
	ls, err := ri.Image.Layers()
	if err != nil {
		return nil, err
	}
	out := make([]v1.Layer, len(ls))
	for i, l := range ls {
		out[i] = &resumableLayer{Layer: l, img: ri}
	}
	return out, nil
}

// LayerByDigest implements v1.Image.
func (ri *resumableImage) LayerByDigest(h v1.Hash) (v1.Layer, error) {
	l, err := ri.Image.LayerByDigest(h)
	if err != nil {
		return nil, err
	}
	return &resumableLayer{Layer: l, img: ri}, nil
}

// LayerByDiffID implements v1.Image.
func (ri *resumableImage) LayerByDiffID(h v1.Hash) (v1.Layer, error) {
	l, err := ri.Image.LayerByDiffID(h)
	if err != nil {
		return nil, err
	}
	return &resumableLayer{Layer: l, img: ri}, nil
}

// blobClient is an HTTP client authorized to pull from the image's repository.
func (ri *resumableImage) blobClient() (*http.Client, error) {
	ri.once.Do(func() {
		auth, err := ri.c.keychain.Resolve(ri.repo)
		if err != nil {
			ri.err = err
			return
		}
		rt, err := transport.NewWithContext(ri.ctx, ri.repo.Registry, auth, ri.c.transport, []string{ri.repo.Scope(transport.PullScope)})
		if err != nil {
			ri.err = err
			return
		}
		ri.client = &http.Client{Transport: rt}
	})
	return ri.client, ri.err
}

// resumableLayer is a layer of a resumableImage.
type resumableLayer struct {
	v1.Layer
	img *resumableImage
}

// Compressed implements v1.Layer.
func (l *resumableLayer) Compressed() (io.ReadCloser, error) {
	digest, err := l.Digest()
	if err != nil {
		return nil, err
	}
	size, err := l.Size()
	if err != nil {
		return nil, err
	}
	return l.img.openBlob(digest, size)
}

// SourceRepository returns the repository the layer is pulled from (store.Sourced).
func (l *resumableLayer) SourceRepository() string { return l.img.repo.Name() }

// openBlob starts the download of a blob of the image's repository. The first request is ours
// too, not an embedded layer's: that one would hash the blob as well, and resumingReader
// verifies everything it reads.
func (ri *resumableImage) openBlob(digest v1.Hash, size int64) (io.ReadCloser, error) {
	r := &resumingReader{img: ri, digest: digest, size: size, hash: sha256.New()}
	var err error
	if r.rc, err = r.get(false); err != nil {
		return nil, r.explain(err)
	}
	return r, nil
}

// Blob downloads the blob desc from repository, verified against its digest and size, and
// resumed after transient failures: a layer the store keeps only unpacked, wanted again.
func (c *Client) Blob(ctx context.Context, repository string, desc v1.Descriptor) (io.ReadCloser, error) {
	r, err := c.parse(repository + "@" + desc.Digest.String())
	if err != nil {
		return nil, err
	}
	ri := &resumableImage{c: c, ctx: ctx, repo: r.Context()}
	return ri.openBlob(desc.Digest, desc.Size)
}

// resumingReader reads a blob, reopening it at the offset reached after a transient failure.
type resumingReader struct {
	img     *resumableImage
	digest  v1.Hash
	size    int64
	rc      io.ReadCloser
	off     int64
	hash    hash.Hash
	retries int
}

func (r *resumingReader) Read(p []byte) (int, error) {
	for {
		n, err := r.rc.Read(p)
		r.off += int64(n)
		r.hash.Write(p[:n])
		switch {
		case err == io.EOF:
			return n, r.verify()
		case err == nil || n > 0 && transient(err):
			// Report the bytes now; a transient error comes back on the next read.
			return n, nil
		case !transient(err) || r.retries >= r.img.c.policy.retries:
			if transient(err) && r.retries > 0 {
				err = &gaveUpError{retries: r.retries, err: err}
			}
			return 0, r.explain(err)
		}
		r.img.c.warnf("downloading layer %s of %s: %s; resuming at byte %d", r.digest, r.img.repo, reason(err), r.off)
		r.rc.Close()
		if err := sleep(r.img.ctx, r.img.c.policy.wait(r.retries, nil)); err != nil {
			return 0, err
		}
		r.retries++
		rc, err := r.reopen()
		if err != nil {
			if !transient(err) {
				return 0, r.explain(err)
			}
			rc = errReader{err}
		}
		r.rc = rc
	}
}

// explain describes a download that failed for good.
func (r *resumingReader) explain(err error) error {
	repo := r.img.repo
	return explain(err, fmt.Sprintf("downloading layer %s (at byte %d) of", r.digest, r.off), repo.String(), repo.RegistryStr(), r.img.c.authenticated(repo))
}

// verify checks the whole blob against its digest and size.
func (r *resumingReader) verify() error {
	if r.size > 0 && r.off != r.size {
		return fmt.Errorf("downloading layer %s: got %d bytes, the manifest says %d", r.digest, r.off, r.size)
	}
	if got := hex.EncodeToString(r.hash.Sum(nil)); r.digest.Algorithm == "sha256" && got != r.digest.Hex {
		return fmt.Errorf("downloading layer %s: the bytes received hash to sha256:%s", r.digest, got)
	}
	return io.EOF
}

func (r *resumingReader) Close() error { return r.rc.Close() }

// reopen asks the registry for the rest of the blob from r.off. A registry that ignores the
// Range header sends the whole blob again, and one that refuses it is asked for the whole
// blob; either way the part already read is skipped.
func (r *resumingReader) reopen() (io.ReadCloser, error) {
	rc, err := r.get(true)
	var terr *transport.Error
	if errors.As(err, &terr) && (terr.StatusCode == http.StatusRequestedRangeNotSatisfiable || terr.StatusCode == http.StatusBadRequest) {
		rc, err = r.get(false)
	}
	return rc, err
}

// get requests the blob, from r.off when ranged.
func (r *resumingReader) get(ranged bool) (io.ReadCloser, error) {
	ri := r.img
	client, err := ri.blobClient()
	if err != nil {
		return nil, err
	}
	u := fmt.Sprintf("%s://%s/v2/%s/blobs/%s", ri.repo.Scheme(), ri.repo.RegistryStr(), ri.repo.RepositoryStr(), r.digest)
	req, err := http.NewRequestWithContext(ri.ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	if ranged {
		if r.size > 0 {
			req.Header.Set("Range", fmt.Sprintf("bytes=%d-%d", r.off, r.size-1))
		} else {
			req.Header.Set("Range", fmt.Sprintf("bytes=%d-", r.off))
		}
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	switch {
	case resp.StatusCode == http.StatusPartialContent && ranged:
		if !strings.HasPrefix(resp.Header.Get("Content-Range"), fmt.Sprintf("bytes %d-", r.off)) {
			resp.Body.Close()
			return nil, fmt.Errorf("the registry answered range %d- with %q", r.off, resp.Header.Get("Content-Range"))
		}
		return resp.Body, nil
	case resp.StatusCode == http.StatusOK:
		if _, err := io.CopyN(io.Discard, resp.Body, r.off); err != nil {
			resp.Body.Close()
			return nil, err
		}
		return resp.Body, nil
	}
	defer resp.Body.Close()
	return nil, transport.CheckError(resp, http.StatusOK, http.StatusPartialContent)
}

// errReader fails every read with err, so that Read's loop retries a failed reopen.
type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }
func (e errReader) Close() error             { return nil }
