package store

import "testing"

func TestNormalizeLocalName(t *testing.T) {
	tests := []struct{ in, want string }{
		{"app", "localhost/app:latest"},
		{"app:v1", "localhost/app:v1"},
		{"x/y:1", "localhost/x/y:1"},
		{"localhost/app", "localhost/app:latest"},
		{"localhost:5000/app", "localhost:5000/app:latest"},
		{"registry:5000/x/y:tag", "registry:5000/x/y:tag"},
		{"quay.io/a/b", "quay.io/a/b:latest"},
		{"docker.io/busybox", "docker.io/library/busybox:latest"},
		{"docker.io/library/busybox:1.36", "docker.io/library/busybox:1.36"},
		{"index.docker.io/library/busybox", "docker.io/library/busybox:latest"},
		{"app@sha256:" + hex64, "localhost/app@sha256:" + hex64},
	}
	for _, tt := range tests {
		got, err := NormalizeLocalName(tt.in)
		if err != nil || got != tt.want {
			t.Errorf("NormalizeLocalName(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
	for _, bad := range []string{"", "App", "a b", "app:", "sha256:" + hex64, "app:" + string(make([]byte, 200))} {
		if got, err := NormalizeLocalName(bad); err == nil {
			t.Errorf("NormalizeLocalName(%q) = %q, want an error", bad, got)
		}
	}
}

const hex64 = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
