package registry

import (
	"context"
	"fmt"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// Push writes img under every ref. Blobs the registry already holds are not
// uploaded again, and each manifest is written after all its blobs, so a
// reader never sees a manifest whose blobs are missing. Refs are pushed one
// after the other; the first failure stops the push.
func (c *Client) Push(ctx context.Context, img v1.Image, refs ...string) error {
	if len(refs) == 0 {
		return fmt.Errorf("pushing image: no reference given")
	}
	parsed := make([]name.Reference, 0, len(refs))
	for _, ref := range refs {
		r, err := c.parse(ref)
		if err != nil {
			return err
		}
		parsed = append(parsed, r)
	}
	pusher, err := remote.NewPusher(c.remoteOptions(ctx)...)
	if err != nil {
		return fmt.Errorf("pushing image to %s: %w", parsed[0], err)
	}
	for _, r := range parsed {
		if err := pusher.Push(ctx, r, img); err != nil {
			return fmt.Errorf("pushing image to %s: %w", r, err)
		}
	}
	return nil
}
