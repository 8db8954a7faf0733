package solver

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"syscall"

	"github.com/kiln-build/kiln/internal/executor"
	"github.com/kiln-build/kiln/internal/rootpath"
)

// Cache keys. A stage's key starts from its base (the base image's manifest digest, the base
// stage's key, or "scratch") and each file-changing step extends it with everything that can
// change what the step writes: the instruction as written, the state it runs in (ENV, ARGs,
// USER, WORKDIR, SHELL), and the content of what it reads (COPY/ADD sources by path, type,
// mode, link target and bytes, not mtimes; --from stages by their keys). The same inputs give
// the same key on any machine and in any directory. Proxy args and secrets are never part of
// a key.

// keyOf hashes its parts, each length-prefixed so that no two part lists collide.
func keyOf(parts ...string) string {
	h := sha256.New()
	for _, p := range parts {
		fmt.Fprintf(h, "%d:%s;", len(p), p)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// stateKey is the part of the stage's state a step may depend on. ARGs count only for steps
// that see them all (RUN, whose environment they are); other steps see only the ARGs their
// text refers to, and that text is keyed already expanded.
func (st *stageState) stateKey(withArgs bool) string {
	c := st.cfg.Config
	var args []string
	if withArgs {
		args = envSlice(st.args)
	}
	data, _ := json.Marshal(struct {
		Env        []string
		Args       []string
		User       string
		WorkingDir string
		Shell      []string
	}{c.Env, args, c.User, c.WorkingDir, c.Shell})
	return string(data)
}

// stepKey is the cache key of a step of this stage; withArgs says whether it sees every ARG
// in scope, and inputs describes what it reads besides the rootfs.
func (st *stageState) stepKey(withArgs bool, text string, inputs ...string) string {
	return keyOf(append([]string{st.key, st.stateKey(withArgs), text}, inputs...)...)
}

// contentKey hashes what a COPY or ADD reads from spec.SrcRoot: the sources Copy expands, each
// walked as Copy walks it (top-level symlinks followed inside the root, .dockerignore applied
// to the same relative paths). withOwners adds uid and gid (sources from a stage keep them;
// context files become root's).
func contentKey(spec executor.CopySpec, withOwners bool) (string, error) {
	sources, err := executor.ExpandSources(spec)
	if err != nil {
		return "", err
	}
	h := sha256.New()
	for _, rel := range sources {
		start, err := rootpath.Resolve(spec.SrcRoot, rel, true)
		if err != nil {
			return "", err
		}
		fmt.Fprintf(h, "source %s;", rel)
		if err := hashTree(h, spec, rel, start, withOwners); err != nil {
			return "", err
		}
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// hashTree writes every entry under start (the resolved source rel) into h.
func hashTree(h io.Writer, spec executor.CopySpec, rel, start string, withOwners bool) error {
	return filepath.WalkDir(start, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		below, err := filepath.Rel(start, p)
		if err != nil {
			return err
		}
		if below != "." {
			excluded, walkInto := executor.Excluded(spec, path.Join(rel, filepath.ToSlash(below)), d.IsDir())
			if excluded && !walkInto {
				if d.IsDir() {
					return filepath.SkipDir
				}
				return nil
			}
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		fmt.Fprintf(h, "%s %o", filepath.ToSlash(below), fi.Mode())
		if withOwners {
			if st, ok := fi.Sys().(*syscall.Stat_t); ok {
				fmt.Fprintf(h, " %d:%d", st.Uid, st.Gid)
			}
		}
		switch {
		case fi.Mode()&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			fmt.Fprintf(h, " -> %s", target)
		case fi.Mode().IsRegular():
			f, err := os.Open(p)
			if err != nil {
				return err
			}
			fmt.Fprintf(h, " %d ", fi.Size())
			_, err = io.Copy(h, f)
			f.Close()
			if err != nil {
				return err
			}
		}
		fmt.Fprint(h, ";")
		return nil
	})
}
