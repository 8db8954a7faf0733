package executor

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestFetch(t *testing.T) {
	modified := time.Date(2024, 5, 6, 7, 8, 9, 0, time.UTC)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/missing" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Last-Modified", modified.Format(http.TimeFormat))
		w.Write([]byte("payload"))
	}))
	defer srv.Close()
	const sum = "sha256:239f59ed55e737c77147cf55ad0c1b030b6d7ee748a7426952f9b852d5a935e5"
	ctx := context.Background()

	dir, name, err := Fetch(ctx, FetchSpec{URL: srv.URL + "/dl/tool.tar.gz", Checksum: sum, TempDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(dir, name))
	if err != nil || name != "tool.tar.gz" {
		t.Fatalf("downloaded %q: %v", name, err)
	}
	if fi.Mode().Perm() != 0o600 || !fi.ModTime().Equal(modified) {
		t.Errorf("mode %v mtime %v, want 0600 and Last-Modified %v", fi.Mode().Perm(), fi.ModTime(), modified)
	}
	for _, tc := range []struct{ url, checksum, want string }{
		{srv.URL + "/f", "sha256:" + strings.Repeat("0", 64), "checksum mismatch"},
		{srv.URL + "/missing", "", "404"},
		{"ftp://example.invalid/x", "", "not an http or https URL"},
	} {
		if _, _, err := Fetch(ctx, FetchSpec{URL: tc.url, Checksum: tc.checksum, TempDir: t.TempDir()}); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Fetch(%s) error = %v, want %q", tc.url, err, tc.want)
		}
	}
}
