package solver

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/moby/buildkit/frontend/dockerfile/instructions"

	"github.com/kiln-build/kiln/internal/executor"
	"github.com/kiln-build/kiln/internal/rootpath"
	"github.com/kiln-build/kiln/internal/sandbox"
)

// Secret is a build secret given with --secret: a file or an environment variable of the
// kiln process. Secrets are mounted from outside every rootfs and never reach a layer, the
// image config or the history.
type Secret struct {
	File string
	Env  string
}

// runMounts turns RUN --mount flags into sandbox mounts. It returns the extra environment
// (secrets with env=), the cache key parts of what the mounts show the RUN (bind sources; never
// cache mount contents or secrets), and a function that releases what the mounts held.
func (st *stageState) runMounts(ctx context.Context, mounts []*instructions.Mount) ([]sandbox.Mount, []string, []string, func(), error) {
	var out []sandbox.Mount
	var env, keys []string
	var releases []func()
	release := func() {
		for i := len(releases) - 1; i >= 0; i-- {
			releases[i]()
		}
	}
	for _, m := range mounts {
		target := m.Target
		if target != "" && !path.IsAbs(target) {
			target = path.Join(st.currentDir(), target)
		}
		var sm []sandbox.Mount
		var rel func()
		var err error
		switch m.Type {
		case instructions.MountTypeBind:
			var key string
			sm, key, rel, err = st.bindMount(ctx, m, target)
			keys = append(keys, key)
		case instructions.MountTypeCache:
			sm, rel, err = st.cacheMount(ctx, m, target)
		case instructions.MountTypeTmpfs:
			sm = []sandbox.Mount{{Type: "tmpfs", Target: target}}
		case instructions.MountTypeSecret:
			var e string
			sm, e, rel, err = st.secretMount(m, target)
			if e != "" {
				env = append(env, e)
			}
		default:
			err = fmt.Errorf("RUN --mount=type=%s is not supported", m.Type)
		}
		if rel != nil {
			releases = append(releases, rel)
		}
		if err != nil {
			release()
			return nil, nil, nil, nil, err
		}
		out = append(out, sm...)
	}
	return out, env, keys, release, nil
}

func (st *stageState) currentDir() string {
	if wd := st.cfg.Config.WorkingDir; wd != "" {
		return wd
	}
	return "/"
}

// bindMount binds a path of the context, a stage or an image. Read-only by default; with rw the
// RUN writes into a throwaway copy.
func (st *stageState) bindMount(ctx context.Context, m *instructions.Mount, target string) ([]sandbox.Mount, string, func(), error) {
	if target == "" {
		return nil, "", nil, fmt.Errorf("--mount=type=bind needs a target")
	}
	root, release := st.s.cfg.Context, func() {}
	var key string
	if m.From != "" {
		from, err := st.s.cfg.Plan.ExpandGlobal(m.From)
		if err != nil {
			return nil, "", nil, err
		}
		if root, key, release, err = st.sourceRoot(ctx, from); err != nil {
			return nil, "", nil, err
		}
	} else {
		var err error
		src := executor.CopySpec{SrcRoot: root, Sources: []string{m.Source}, Instruction: "RUN --mount"}
		if key, err = contentKey(src, false); err != nil {
			return nil, "", nil, fmt.Errorf("--mount=type=bind source %q: %w", m.Source, err)
		}
	}
	src, err := rootpath.Resolve(root, m.Source, true)
	if err == nil {
		_, err = os.Stat(src)
	}
	if err != nil {
		release()
		return nil, "", nil, fmt.Errorf("--mount=type=bind source %q: %w", m.Source, err)
	}
	key = keyOf(key, m.Source)
	if m.ReadOnly {
		return []sandbox.Mount{{Type: "bind", Source: src, Target: target, ReadOnly: true}}, key, release, nil
	}
	tmp, err := st.s.cfg.Store.TempDir("bind-rw-")
	if err != nil {
		release()
		return nil, "", nil, err
	}
	cleanup := func() { release(); os.RemoveAll(tmp) }
	copySrc := m.Source
	if copySrc == "" {
		copySrc = "/"
	}
	dest := "/"
	if fi, _ := os.Stat(src); fi != nil && !fi.IsDir() {
		dest = "/" + filepath.Base(src)
	}
	if err := executor.Copy(ctx, tmp, executor.CopySpec{SrcRoot: root, Sources: []string{copySrc}, Dest: dest, Instruction: "RUN --mount"}); err != nil {
		cleanup()
		return nil, "", nil, err
	}
	return []sandbox.Mount{{Type: "bind", Source: filepath.Join(tmp, dest), Target: target}}, key, cleanup, nil
}

// cacheMount binds a persistent directory of the store, keyed by id (default: the target).
// locked and private sharing serialise builds on the same id; shared lets them overlap.
func (st *stageState) cacheMount(ctx context.Context, m *instructions.Mount, target string) ([]sandbox.Mount, func(), error) {
	if target == "" {
		return nil, nil, fmt.Errorf("--mount=type=cache needs a target")
	}
	id := m.CacheID
	if id == "" {
		id = target
	}
	exclusive := m.CacheSharing == instructions.MountSharingLocked || m.CacheSharing == instructions.MountSharingPrivate
	dir, created, unlock, err := st.s.cfg.Store.CacheMount(ctx, id, exclusive)
	if err != nil {
		return nil, nil, fmt.Errorf("--mount=type=cache,id=%s: %w", id, err)
	}
	if created {
		mode := fs.FileMode(0o755)
		if m.Mode != nil {
			mode = fs.FileMode(*m.Mode) & fs.ModePerm
		}
		uid, gid := 0, 0
		if m.UID != nil {
			uid = int(*m.UID)
		}
		if m.GID != nil {
			gid = int(*m.GID)
		}
		if err = os.Chmod(dir, mode); err == nil {
			err = os.Lchown(dir, uid, gid)
		}
		if err != nil {
			unlock()
			return nil, nil, fmt.Errorf("--mount=type=cache,id=%s: %w", id, err)
		}
	}
	return []sandbox.Mount{{Type: "bind", Source: dir, Target: target}}, unlock, nil
}

// secretMount binds a secret file read-only at its target (default /run/secrets/ID), or
// returns it as NAME=VALUE for env=.
func (st *stageState) secretMount(m *instructions.Mount, target string) ([]sandbox.Mount, string, func(), error) {
	id := m.CacheID
	if id == "" {
		id = path.Base(m.Target)
	}
	sec, ok := st.s.cfg.Secrets[id]
	if !ok {
		if m.Required {
			return nil, "", nil, fmt.Errorf("secret %q is required but was not given (kiln build --secret id=%s,src=FILE)", id, id)
		}
		return nil, "", nil, nil
	}
	if m.Env != nil {
		name := *m.Env
		if name == "" {
			name = strings.ToUpper(id)
		}
		val, err := secretValue(sec)
		if err != nil {
			return nil, "", nil, fmt.Errorf("secret %q: %w", id, err)
		}
		if m.Target == "" {
			return nil, name + "=" + val, nil, nil
		}
	}
	if target == "" {
		target = "/run/secrets/" + id
	}
	file := sec.File
	if file == "" {
		val, err := secretValue(sec)
		if err != nil {
			return nil, "", nil, fmt.Errorf("secret %q: %w", id, err)
		}
		dir, err := st.s.cfg.Store.TempDir("secret-")
		if err != nil {
			return nil, "", nil, err
		}
		release := func() { os.RemoveAll(dir) }
		file = filepath.Join(dir, "secret")
		if err := os.WriteFile(file, []byte(val), 0o400); err != nil {
			release()
			return nil, "", nil, fmt.Errorf("secret %q: %w", id, err)
		}
		return []sandbox.Mount{{Type: "bind", Source: file, Target: target, ReadOnly: true}}, "", release, nil
	}
	return []sandbox.Mount{{Type: "bind", Source: file, Target: target, ReadOnly: true}}, "", nil, nil
}

func secretValue(s Secret) (string, error) {
	if s.File != "" {
		b, err := os.ReadFile(s.File)
		return string(b), err
	}
	v, ok := os.LookupEnv(s.Env)
	if !ok {
		return "", fmt.Errorf("environment variable %s is not set", s.Env)
	}
	return v, nil
}
