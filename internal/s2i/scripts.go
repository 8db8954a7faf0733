package s2i

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"strings"
)

// The scripts of the s2i contract.
const (
	Assemble        = "assemble"
	Run             = "run"
	SaveArtifacts   = "save-artifacts"
	Usage           = "usage"
	AssembleRuntime = "assemble-runtime"
)

// maxScriptSize bounds a downloaded script.
const maxScriptSize = 16 << 20

// Script is where one script of the build comes from.
type Script struct {
	Name string
	// Origin says which location provided it: "--scripts-url", "the source's .s2i/bin" or the
	// label of an image.
	Origin string
	// URL is the location itself: image://DIR, file://DIR, http(s)://... or .s2i/bin.
	URL string
	// InImage is set when the script is already inside the image (image://): kiln cannot check
	// that it really is there, so an optional one is run only if it exists.
	InImage bool
	// data is the script's content when kiln copies it into the image.
	data []byte
}

// path is where the script is in the image: its image:// path, or dir (where kiln copies the
// scripts it found elsewhere) for the others.
func (s Script) path(dir string) string {
	if s.InImage {
		return path.Join(strings.TrimPrefix(s.URL, "image://"), s.Name)
	}
	return path.Join(dir, s.Name)
}

// location is one place scripts are looked for, in s2i's order: the --scripts-url, the
// source's .s2i/bin, the image's label.
type location struct {
	origin string
	url    string
	// explicit is the user's own --scripts-url: when it cannot be reached at all, the build
	// stops instead of quietly taking the scripts from somewhere else.
	explicit bool
	// One of: imageDir (image://), fileDir (file:// and .s2i/bin), httpBase (http(s)://).
	imageDir, fileDir, httpBase string
}

// parseLocation parses a scripts URL: image://DIR (scripts inside the image), file://DIR
// (on this machine) or http(s)://BASE (downloaded from BASE/NAME).
func parseLocation(origin, raw string) (location, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return location{}, fmt.Errorf("%s %q: %w", origin, raw, err)
	}
	loc := location{origin: origin, url: raw}
	switch u.Scheme {
	case "image":
		loc.imageDir = path.Clean("/" + u.Host + u.Path)
		if err := checkImagePath(origin, loc.imageDir); err != nil {
			return location{}, err
		}
	case "file":
		// file://./dir names a relative directory: its host part holds "." or "..".
		loc.fileDir = filepath.Clean(filepath.Join(u.Host, filepath.FromSlash(u.Path)))
	case "http", "https":
		loc.httpBase = strings.TrimRight(raw, "/")
	default:
		return location{}, fmt.Errorf("%s %q: use image://DIR, file://DIR or http(s)://URL", origin, raw)
	}
	return loc, nil
}

// ParseScriptsURL checks a --scripts-url value.
func ParseScriptsURL(raw string) error {
	_, err := parseLocation("--scripts-url", raw)
	return err
}

// scriptFinder finds scripts in its locations, in order.
type scriptFinder struct {
	locations []location
	client    *http.Client
	// tried records why each location that was tried did not provide a script, for the error
	// about a required one.
	tried map[string][]string
}

// newScriptFinder sets up the lookup of s2i: userURL (--scripts-url), then sourceRoot's
// .s2i/bin, then the scripts URL labels of img. Labels kiln cannot use are reported in notes.
func newScriptFinder(userURL, sourceRoot string, img Image, client *http.Client) (*scriptFinder, []string, error) {
	f := &scriptFinder{client: client, tried: map[string][]string{}}
	if f.client == nil {
		f.client = http.DefaultClient
	}
	var notes []string
	if userURL != "" {
		loc, err := parseLocation("--scripts-url", userURL)
		if err != nil {
			return nil, nil, err
		}
		loc.explicit = true
		f.locations = append(f.locations, loc)
	}
	f.locations = append(f.locations, location{origin: "the source's " + sourceBinDir, url: sourceBinDir, fileDir: joinRel(sourceRoot, sourceBinDir)})
	if key, raw := img.scriptsURL(); raw != "" {
		loc, err := parseLocation(key+" of "+img.Ref, raw)
		if err != nil {
			notes = append(notes, fmt.Sprintf("ignoring %v", err))
		} else {
			f.locations = append(f.locations, loc)
		}
	}
	return f, notes, nil
}

// find looks for the script name in every location in turn. It returns false when none has it.
func (f *scriptFinder) find(ctx context.Context, name string) (Script, bool, error) {
	for _, loc := range f.locations {
		s := Script{Name: name, Origin: loc.origin, URL: loc.url}
		var err error
		switch {
		case loc.imageDir != "":
			// Inside the image: s2i stops looking there, and so does kiln.
			s.InImage = true
			return s, true, nil
		case loc.fileDir != "":
			s.data, err = readScriptFile(filepath.Join(loc.fileDir, name))
		default:
			s.data, err = f.download(ctx, loc.httpBase+"/"+name)
		}
		if err == nil {
			return s, true, nil
		}
		if ctx.Err() != nil {
			return Script{}, false, ctx.Err()
		}
		// A script the user's URL does not have is looked for further, as s2i does; a URL
		// that does not answer is an error.
		var nf *notFoundError
		if loc.explicit && loc.httpBase != "" && !errors.As(err, &nf) {
			return Script{}, false, fmt.Errorf("--scripts-url %s: fetching the %s script: %w", loc.url, name, err)
		}
		f.tried[name] = append(f.tried[name], fmt.Sprintf("%s: %v", loc.origin, err))
	}
	return Script{}, false, nil
}

// require is find for a script the build cannot do without.
func (f *scriptFinder) require(ctx context.Context, name, image string) (Script, error) {
	s, ok, err := f.find(ctx, name)
	if err != nil {
		return Script{}, fmt.Errorf("looking for the %s script: %w", name, err)
	}
	if !ok {
		why := "no location was given"
		if len(f.tried[name]) > 0 {
			why = strings.Join(f.tried[name], "; ")
		}
		return Script{}, fmt.Errorf("no %s script for %s (%s): give --scripts-url, add %s/%s to the source, or label the image %s=image://DIR",
			name, image, why, sourceBinDir, name, LabelScriptsURL)
	}
	return s, nil
}

// notFoundError is a scripts URL answering that it has no such script.
type notFoundError struct{ url, status string }

func (e *notFoundError) Error() string { return fmt.Sprintf("GET %s: %s", e.url, e.status) }

// readScriptFile reads a script from this machine; it must be a regular file.
func readScriptFile(p string) ([]byte, error) {
	fi, err := os.Stat(p)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("no %s", p)
		}
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file", p)
	}
	return os.ReadFile(p)
}

// download fetches a script over http(s).
func (f *scriptFinder) download(ctx context.Context, u string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	resp, err := f.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNotFound || resp.StatusCode == http.StatusGone {
		return nil, &notFoundError{url: u, status: resp.Status}
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", u, resp.Status)
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxScriptSize+1))
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", u, err)
	}
	if len(data) > maxScriptSize {
		return nil, fmt.Errorf("GET %s: the script is larger than %d bytes", u, maxScriptSize)
	}
	return data, nil
}
