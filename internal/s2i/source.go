package s2i

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"strings"
	"time"
)

// Where s2i looks inside the source.
const (
	sourceEnvFile = ".s2i/environment"
	sourceBinDir  = ".s2i/bin"
	ignoreFile    = ".s2iignore"
)

// DefaultExclude is s2i's default --exclude: git metadata, wherever it is.
const DefaultExclude = `(^|/)\.git(/|$)`

// ignoreRule is one line of .s2iignore: a glob pattern relative to the source root, matched
// against whole relative paths (so "*.log" means top-level .log files, as with s2i), or with
// keep a "!" line that takes back the paths earlier lines matched.
type ignoreRule struct {
	pattern string
	keep    bool
}

// readIgnoreFile reads .s2iignore under root; a missing file means no rules.
func readIgnoreFile(root string) ([]ignoreRule, error) {
	f, err := os.Open(joinRel(root, ignoreFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", ignoreFile, err)
	}
	defer f.Close()
	return parseIgnore(f)
}

// parseIgnore parses .s2iignore lines: blank lines and # comments are skipped, a leading "!"
// keeps what earlier lines matched, a leading "/" is the source root.
func parseIgnore(r io.Reader) ([]ignoreRule, error) {
	var rules []ignoreRule
	sc := bufio.NewScanner(r)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		rule := ignoreRule{}
		if strings.HasPrefix(line, "!") {
			rule.keep, line = true, line[1:]
		}
		rule.pattern = path.Clean(strings.TrimLeft(line, "/"))
		if rule.pattern == "." || rule.pattern == "" {
			continue
		}
		if _, err := path.Match(rule.pattern, ""); err != nil {
			return nil, fmt.Errorf("%s:%d: pattern %q: %w", ignoreFile, n, line, err)
		}
		rules = append(rules, rule)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("reading %s: %w", ignoreFile, err)
	}
	return rules, nil
}

// ignoredPaths applies rules in order to paths (relative, slash-separated): a pattern adds
// the paths it matches, a "!" pattern removes from what was added those it matches.
func ignoredPaths(rules []ignoreRule, paths []string) map[string]bool {
	out := map[string]bool{}
	for _, r := range rules {
		if r.keep {
			for p := range out {
				if ok, _ := path.Match(r.pattern, p); ok {
					delete(out, p)
				}
			}
			continue
		}
		for _, p := range paths {
			if ok, _ := path.Match(r.pattern, p); ok {
				out[p] = true
			}
		}
	}
	return out
}

// copySource copies the source tree at root into dst, leaving out what exclude matches and
// what .s2iignore names (a directory goes with everything in it). It returns the relative
// paths it left out (the top of each left-out tree) and the special files it skipped.
func copySource(root, dst string, exclude *regexp.Regexp) (excluded, skipped []string, err error) {
	rules, err := readIgnoreFile(root)
	if err != nil {
		return nil, nil, err
	}
	var paths []string
	err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == root {
			return nil
		}
		rel := relSlash(root, p)
		if exclude != nil && exclude.MatchString(rel) {
			excluded = append(excluded, rel)
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		paths = append(paths, rel)
		return nil
	})
	if err != nil {
		return nil, nil, fmt.Errorf("reading the source %s: %w", root, err)
	}
	ignored := ignoredPaths(rules, paths)
	c := &copier{}
	if _, err := c.entry(root, dst); err != nil {
		return nil, nil, fmt.Errorf("copying the source: %w", err)
	}
	var gone []string // left-out directories, to skip what is under them
	for _, rel := range paths {
		if underAny(rel, gone) {
			continue
		}
		if ignored[rel] {
			excluded = append(excluded, rel)
			gone = append(gone, rel)
			continue
		}
		ok, err := c.entry(joinRel(root, rel), joinRel(dst, rel))
		if err != nil {
			return nil, nil, fmt.Errorf("copying the source: %w", err)
		}
		if !ok {
			skipped = append(skipped, rel)
		}
	}
	if err := c.finish(); err != nil {
		return nil, nil, fmt.Errorf("copying the source: %w", err)
	}
	return excluded, skipped, nil
}

// underAny reports whether rel lies inside one of dirs.
func underAny(rel string, dirs []string) bool {
	for _, d := range dirs {
		if strings.HasPrefix(rel, d+"/") {
			return true
		}
	}
	return false
}

// copyReadable copies a file or a directory tree from src to dst (which must not exist),
// making everything readable by all: the copy is bind-mounted for the assemble user, whoever
// owns the original. (The directory above dst keeps it private on this machine.)
func copyReadable(src, dst string) error {
	c := &copier{readable: true}
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		_, err = c.entry(p, filepath.Join(dst, rel))
		return err
	})
	if err != nil {
		return err
	}
	return c.finish()
}

// copier copies entries one at a time, parents first, keeping permission bits and
// modification times. Directories get theirs once everything is in them (finish): a
// read-only directory must stay writable while it is filled, and filling it changes its
// time.
type copier struct {
	dirs []copiedDir
	// readable adds read permission (and search permission on directories) for everyone.
	readable bool
}

type copiedDir struct {
	path string
	mode fs.FileMode
	mod  time.Time
}

// entry copies one directory (not its contents), regular file or symlink. It returns false,
// and copies nothing, for other kinds of files (sockets, fifos, devices), which have no place
// in a build context.
func (c *copier) entry(src, dst string) (bool, error) {
	fi, err := os.Lstat(src)
	if err != nil {
		return false, err
	}
	switch {
	case fi.IsDir():
		if err := os.MkdirAll(dst, 0o700); err != nil {
			return false, err
		}
		mode := fi.Mode().Perm()
		if c.readable {
			mode |= 0o555
		}
		c.dirs = append(c.dirs, copiedDir{path: dst, mode: mode, mod: fi.ModTime()})
		return true, nil
	case fi.Mode()&fs.ModeSymlink != 0:
		target, err := os.Readlink(src)
		if err != nil {
			return false, err
		}
		return true, os.Symlink(target, dst)
	case fi.Mode().IsRegular():
		mode := fi.Mode().Perm()
		if c.readable {
			mode |= 0o444
		}
		if err := copyFile(src, dst, mode); err != nil {
			return false, err
		}
		return true, os.Chtimes(dst, fi.ModTime(), fi.ModTime())
	}
	return false, nil
}

// finish gives the copied directories their modes and times, deepest first.
func (c *copier) finish() error {
	for i := len(c.dirs) - 1; i >= 0; i-- {
		d := c.dirs[i]
		if err := os.Chmod(d.path, d.mode); err != nil {
			return err
		}
		if err := os.Chtimes(d.path, d.mod, d.mod); err != nil {
			return err
		}
	}
	return nil
}

// copyFile copies a regular file's content into a new file with mode perm.
func copyFile(src, dst string, perm fs.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	if err := out.Close(); err != nil {
		return err
	}
	// After writing: the umask must not change the mode, and a read-only file must be
	// writable while it is filled.
	return os.Chmod(dst, perm)
}

// relSlash is p relative to root, with forward slashes.
func relSlash(root, p string) string {
	rel, err := filepath.Rel(root, p)
	if err != nil {
		return filepath.ToSlash(p)
	}
	return filepath.ToSlash(rel)
}

// joinRel joins a slash-separated relative path to dir.
func joinRel(dir, rel string) string {
	return filepath.Join(dir, filepath.FromSlash(rel))
}
