package store

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"golang.org/x/sys/unix"

	"github.com/kiln-build/kiln/internal/archive"
)

// helperEnv makes the test binary act as a build that gets killed (see
// runHelper) instead of running tests.
const helperEnv = "KILN_STORE_TEST_HELPER"

func TestMain(m *testing.M) {
	if mode := os.Getenv(helperEnv); mode != "" {
		if err := runHelper(mode, os.Args[len(os.Args)-1]); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// runHelper opens the store at root and starts writing a blob ("blob") or
// unpacking a layer ("unpack") whose source stalls halfway; it prints
// "ready" once half the data went in, then waits to be killed.
func runHelper(mode, root string) error {
	s, err := Open(root)
	if err != nil {
		return err
	}
	half := make([]byte, 1<<20)
	rand.Read(half)
	stall := io.MultiReader(bytes.NewReader(half), stallReader{})
	switch mode {
	case "blob":
		_, _, err = s.WriteBlob(context.Background(), stall, v1.Hash{})
	case "unpack":
		l, lerr := random.Layer(4<<20, types.OCILayer)
		if lerr != nil {
			return lerr
		}
		img := imageOfLayer(stallingLayer{l})
		_, err = s.Unpack(context.Background(), img, archive.ExtractOptions{SquashOwners: true})
	}
	return fmt.Errorf("helper %s finished instead of stalling: %v", mode, err)
}

// stallReader announces that the data before it was read, then blocks.
type stallReader struct{}

func (stallReader) Read([]byte) (int, error) {
	fmt.Println("ready")
	select {}
}

// stallingLayer serves half of its compressed stream, then stalls.
type stallingLayer struct{ v1.Layer }

func (l stallingLayer) Compressed() (io.ReadCloser, error) {
	rc, err := l.Layer.Compressed()
	if err != nil {
		return nil, err
	}
	size, _ := l.Layer.Size()
	return io.NopCloser(io.MultiReader(io.LimitReader(rc, size/2), stallReader{})), nil
}

// killedHelper runs the helper in mode against root, waits until it is
// halfway through its write, and kills it with SIGKILL.
func killedHelper(t *testing.T, mode, root string) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$", root)
	cmd.Env = append(os.Environ(), helperEnv+"="+mode)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line, _ := bufio.NewReader(out).ReadString('\n')
	cmd.Process.Kill()
	cmd.Wait()
	if strings.TrimSpace(line) != "ready" {
		t.Fatalf("helper %s never got halfway: %q %s", mode, line, stderr.String())
	}
}

func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

func TestOpenCreatesLayout(t *testing.T) {
	root := filepath.Join(t.TempDir(), "a", "store")
	s, err := Open(root)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, p := range []string{"oci-layout", "index.json", "lock", "blobs/sha256", "layers", "snapshots", "tmp", "cache"} {
		if _, err := os.Stat(filepath.Join(root, p)); err != nil {
			t.Errorf("layout: %v", err)
		}
	}
	// Opening again keeps what is there.
	if err := os.WriteFile(filepath.Join(root, "cache", "keep"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	s2, err := Open(root)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if _, err := os.Stat(filepath.Join(root, "cache", "keep")); err != nil {
		t.Fatal(err)
	}
	if imgs, err := s2.Images(); err != nil || len(imgs) != 0 {
		t.Fatalf("Images of an empty store: %v, %v", imgs, err)
	}
}

func TestKilledWritesLeaveNothingVisible(t *testing.T) {
	for _, mode := range []string{"blob", "unpack"} {
		t.Run(mode, func(t *testing.T) {
			root := t.TempDir()
			killedHelper(t, mode, root)
			if names := dirNames(t, filepath.Join(root, "blobs", "sha256")); len(names) != 0 {
				t.Errorf("a killed %s left blobs: %v", mode, names)
			}
			if names := dirNames(t, filepath.Join(root, "layers")); len(names) != 0 {
				t.Errorf("a killed %s left layers: %v", mode, names)
			}
			if names := dirNames(t, filepath.Join(root, "tmp")); len(names) != 1 {
				t.Fatalf("want the killed session in tmp/, got %v", names)
			}
			s, err := Open(root)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			if names := dirNames(t, filepath.Join(root, "tmp")); len(names) != 1 || filepath.Join(root, "tmp", names[0]) != s.session {
				t.Fatalf("Open left stale entries in tmp/: %v", names)
			}
		})
	}
}

func TestOpenKeepsLiveSessions(t *testing.T) {
	live := openStore(t)
	dir, err := live.TempDir("work-")
	if err != nil {
		t.Fatal(err)
	}
	closed, err := Open(live.Root())
	if err != nil {
		t.Fatal(err)
	}
	closedDir, _ := closed.TempDir("x-")
	closed.held.Close() // dies without cleaning up
	os.WriteFile(filepath.Join(live.Root(), "tmp", "stray-file"), []byte("x"), 0o600)

	again, err := Open(live.Root())
	if err != nil {
		t.Fatal(err)
	}
	defer again.Close()
	if _, err := os.Stat(dir); err != nil {
		t.Errorf("Open removed a live store's temporary dir: %v", err)
	}
	for _, gone := range []string{closedDir, filepath.Join(live.Root(), "tmp", "stray-file")} {
		if _, err := os.Stat(gone); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("stale %s survived Open: %v", gone, err)
		}
	}
	if !strings.HasPrefix(dir, filepath.Join(live.Root(), "tmp")+"/") {
		t.Errorf("TempDir %s is not under tmp/", dir)
	}
}

func TestWriteBlob(t *testing.T) {
	s := openStore(t)
	data := []byte("some blob content")
	tests := []struct {
		name    string
		want    v1.Hash
		wantErr string
	}{
		{"no digest given", v1.Hash{}, ""},
		{"right digest", sha(data), ""},
		{"wrong digest", sha([]byte("other")), "digest mismatch"},
		{"other algorithm", v1.Hash{Algorithm: "sha512", Hex: strings.Repeat("0", 128)}, "unsupported"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, n, err := s.WriteBlob(context.Background(), bytes.NewReader(data), tt.want)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				if tt.want.Algorithm == "sha256" && s.HasBlob(tt.want) {
					t.Fatal("a rejected blob is visible")
				}
				return
			}
			if err != nil || h != sha(data) || n != int64(len(data)) {
				t.Fatalf("WriteBlob = %s, %d, %v", h, n, err)
			}
			got, err := os.ReadFile(s.BlobPath(h))
			if err != nil || !bytes.Equal(got, data) {
				t.Fatalf("stored blob: %q, %v", got, err)
			}
		})
	}
	if names := dirNames(t, s.session); len(names) != 0 {
		t.Errorf("temporary files left behind: %v", names)
	}
	_, _, err := s.WriteBlob(context.Background(), strings.NewReader("x"), v1.Hash{Algorithm: "sha256", Hex: "abc"})
	if err == nil {
		t.Error("a malformed digest was accepted")
	}
}

func TestLock(t *testing.T) {
	s := openStore(t)
	other, err := Open(s.Root())
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	unlock1, err := s.Lock(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	unlock2, err := other.Lock(context.Background())
	if err != nil {
		t.Fatalf("two builds could not hold the store at once: %v", err)
	}
	// Maintenance (an exclusive holder) must wait for both builds.
	f, err := os.Open(filepath.Join(s.Root(), "lock"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); !errors.Is(err, unix.EWOULDBLOCK) {
		t.Fatalf("exclusive lock while builds run: %v", err)
	}
	unlock1()
	unlock2()
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		t.Fatalf("exclusive lock after builds: %v", err)
	}
	// A build waits for maintenance until its context gives up.
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if _, err := s.Lock(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Lock during maintenance: %v", err)
	}
}
