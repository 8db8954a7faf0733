package registry

import (
	"context"
	"fmt"
	"io"
	"net/http"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"golang.org/x/sync/errgroup"
)

// Push writes img under every ref, which may be spread over several registries. Registries
// are pushed to in parallel, and within one push the layers upload in parallel. Each blob
// goes to each registry at most once: blobs the registry already holds are skipped, and the
// second and later repositories of a registry mount the blobs from the first instead of
// uploading them again, and the first mounts pulled layers the store keeps no blob of from
// their repository, when it is on the same registry. A manifest is written only after all its blobs, so a tag never
// points at a half-pushed image. A transient failure in the middle of an upload retries the
// push, which resumes with the blobs not yet there.
func (c *Client) Push(ctx context.Context, img v1.Image, refs ...string) error {
	if len(refs) == 0 {
		return fmt.Errorf("pushing image: no reference given")
	}
	var order []string
	byRegistry := map[string][]name.Reference{}
	for _, ref := range refs {
		r, err := c.resolve(ref)
		if err != nil {
			return err
		}
		reg := r.Context().RegistryStr()
		if _, ok := byRegistry[reg]; !ok {
			order = append(order, reg)
		}
		byRegistry[reg] = append(byRegistry[reg], r)
	}
	g, ctx := errgroup.WithContext(ctx)
	for _, reg := range order {
		g.Go(func() error {
			first := byRegistry[reg][0]
			if err := c.pushOne(ctx, &mountable{Image: img, c: c, registry: reg}, first); err != nil {
				return err
			}
			again := &mountable{Image: img, c: c, registry: reg, from: first}
			for _, r := range byRegistry[reg][1:] {
				if err := c.pushOne(ctx, again, r); err != nil {
					return err
				}
			}
			return nil
		})
	}
	return g.Wait()
}

// pushOne pushes img to r, retrying the push after transient failures.
func (c *Client) pushOne(ctx context.Context, img v1.Image, r name.Reference) error {
	err := c.retry(ctx, "pushing "+r.String(), func(ctx context.Context) error {
		return remote.Write(r, img, c.remoteOptions(ctx)...)
	})
	return explain(err, "pushing", r.String(), r.Context().RegistryStr(), c.authenticated(r.Context()))
}

// mountable presents an image's layers as mountable, so that a push mounts them instead of
// uploading them: all of them from the repository from, when set (the image was pushed there,
// on the same registry, just before); otherwise the layers the store keeps only unpacked, from
// the repository they were pulled from, when that is on the registry pushed to. A registry
// that refuses a mount gets the blob uploaded.
type mountable struct {
	v1.Image
	c        *Client
	registry string
	from     name.Reference
}

// wrap makes l mountable where it can be.
func (m *mountable) wrap(l v1.Layer) v1.Layer {
	if m.from != nil {
		return &remote.MountableLayer{Layer: l, Reference: m.from}
	}
	s, ok := l.(interface{ SourceRepository() string })
	if !ok || s.SourceRepository() == "" {
		return l
	}
	digest, err := l.Digest()
	if err != nil {
		return l
	}
	src, err := m.c.parse(s.SourceRepository() + "@" + digest.String())
	if err != nil || src.Context().RegistryStr() != m.registry {
		return l
	}
	return &remote.MountableLayer{Layer: l, Reference: src}
}

// Layers implements v1.Image.
func (m *mountable) Layers() ([]v1.Layer, error) {
	ls, err := m.Image.Layers()
	if err != nil {
		return nil, err
	}
	out := make([]v1.Layer, len(ls))
	for i, l := range ls {
		out[i] = m.wrap(l)
	}
	return out, nil
}

// LayerByDigest implements v1.Image.
func (m *mountable) LayerByDigest(h v1.Hash) (v1.Layer, error) {
	l, err := m.Image.LayerByDigest(h)
	if err != nil {
		return nil, err
	}
	return m.wrap(l), nil
}

// CheckPush verifies that the credentials kiln has for ref's registry may push to its
// repository, by starting a blob upload there and cancelling it, as kaniko does. It is meant
// to run before a long build, so that a typo or a missing login fails at once.
func (c *Client) CheckPush(ctx context.Context, ref string) error {
	r, err := c.resolve(ref)
	if err != nil {
		return err
	}
	repo := r.Context()
	err = c.retry(ctx, "checking push access to "+repo.String(), func(ctx context.Context) error {
		auth, err := c.keychain.Resolve(repo)
		if err != nil {
			return err
		}
		rt, err := transport.NewWithContext(ctx, repo.Registry, auth, c.transport, []string{repo.Scope(transport.PushScope)})
		if err != nil {
			return err
		}
		client := &http.Client{Transport: rt}
		u := fmt.Sprintf("%s://%s/v2/%s/blobs/uploads/", repo.Scheme(), repo.RegistryStr(), repo.RepositoryStr())
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, http.NoBody)
		if err != nil {
			return err
		}
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		if err := transport.CheckError(resp, http.StatusAccepted); err != nil {
			return err
		}
		io.Copy(io.Discard, resp.Body)
		// Cancel the upload just started; a registry that keeps it will expire it anyway.
		if loc, err := resp.Location(); err == nil {
			if del, err := http.NewRequestWithContext(ctx, http.MethodDelete, loc.String(), http.NoBody); err == nil {
				if resp, err := client.Do(del); err == nil {
					resp.Body.Close()
				}
			}
		}
		return nil
	})
	return explain(err, "checking push access to", repo.String(), repo.RegistryStr(), c.authenticated(repo))
}
