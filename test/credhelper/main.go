// Command credhelper is a docker credential helper for kiln's tests. It
// speaks the protocol of github.com/docker/docker-credential-helpers (the
// actions get, store, erase, list and version, the argument on stdin, the
// answer or an error message on stdout) and keeps credentials in the JSON
// file named by $KILN_TEST_CREDHELPER_FILE instead of a system keychain.
//
// Tests build it as docker-credential-NAME (see registrytest.BuildCredHelper),
// put its directory on PATH and name it in a docker config.json's
// credsStore or credHelpers. Server URLs are matched exactly as stored.
package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// fileEnv names the environment variable holding the credentials file.
const fileEnv = "KILN_TEST_CREDHELPER_FILE"

// The messages docker's client library recognises (credentials/error.go).
const (
	notFoundMessage      = "credentials not found in native keychain"
	missingURLMessage    = "no credentials server URL"
	missingUserMessage   = "no credentials username"
	usageMessage         = "Usage: docker-credential-NAME <store|get|erase|list|version>"
	credentialsFileUsage = "it names the JSON file this credential helper keeps credentials in"
)

// credentials is what store reads and get writes.
type credentials struct {
	ServerURL string
	Username  string
	Secret    string
}

// entry is one server's credentials in the file.
type entry struct {
	Username string
	Secret   string
}

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stdout, usageMessage)
		os.Exit(1)
	}
	if err := run(os.Args[1], os.Stdin, os.Stdout); err != nil {
		// The protocol puts errors on stdout, where the client reads them.
		fmt.Fprintln(os.Stdout, err)
		os.Exit(1)
	}
}

// run carries out one action.
func run(action string, in io.Reader, out io.Writer) error {
	switch action {
	case "version", "--version", "-v":
		_, err := fmt.Fprintf(out, "%s (github.com/kiln-build/kiln/test/credhelper) test\n", filepath.Base(os.Args[0]))
		return err
	case "store":
		var c credentials
		if err := json.NewDecoder(in).Decode(&c); err != nil {
			return fmt.Errorf("store: reading credentials JSON from stdin: %w", err)
		}
		if strings.TrimSpace(c.ServerURL) == "" {
			return errors.New(missingURLMessage)
		}
		if strings.TrimSpace(c.Username) == "" {
			return errors.New(missingUserMessage)
		}
		return update(func(all map[string]entry) error {
			all[c.ServerURL] = entry{Username: c.Username, Secret: c.Secret}
			return nil
		})
	case "get":
		url, err := readURL(in)
		if err != nil {
			return err
		}
		all, err := load()
		if err != nil {
			return err
		}
		e, ok := all[url]
		if !ok {
			return errors.New(notFoundMessage)
		}
		return json.NewEncoder(out).Encode(credentials{ServerURL: url, Username: e.Username, Secret: e.Secret})
	case "erase":
		url, err := readURL(in)
		if err != nil {
			return err
		}
		return update(func(all map[string]entry) error {
			if _, ok := all[url]; !ok {
				return errors.New(notFoundMessage)
			}
			delete(all, url)
			return nil
		})
	case "list":
		all, err := load()
		if err != nil {
			return err
		}
		users := map[string]string{}
		for url, e := range all {
			users[url] = e.Username
		}
		return json.NewEncoder(out).Encode(users)
	default:
		return fmt.Errorf("unknown credential action %q; %s", action, usageMessage)
	}
}

// readURL reads a server URL from stdin.
func readURL(in io.Reader) (string, error) {
	data, err := io.ReadAll(in)
	if err != nil {
		return "", fmt.Errorf("reading the server URL from stdin: %w", err)
	}
	url := strings.TrimSpace(string(data))
	if url == "" {
		return "", errors.New(missingURLMessage)
	}
	return url, nil
}

// path is the credentials file.
func path() (string, error) {
	p := os.Getenv(fileEnv)
	if p == "" {
		return "", fmt.Errorf("%s is not set: %s", fileEnv, credentialsFileUsage)
	}
	return p, nil
}

// load reads every stored credential; a missing file holds none.
func load() (map[string]entry, error) {
	p, err := path()
	if err != nil {
		return nil, err
	}
	all := map[string]entry{}
	data, err := os.ReadFile(p)
	if errors.Is(err, fs.ErrNotExist) {
		return all, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading the credentials file: %w", err)
	}
	if err := json.Unmarshal(data, &all); err != nil {
		return nil, fmt.Errorf("parsing the credentials file %s: %w", p, err)
	}
	return all, nil
}

// update loads the credentials, applies change and writes them back
// atomically (mode 0600), creating the file if need be.
func update(change func(map[string]entry) error) error {
	all, err := load()
	if err != nil {
		return err
	}
	if err := change(all); err != nil {
		return err
	}
	p, _ := path()
	data, err := json.MarshalIndent(all, "", "  ")
	if err != nil {
		return fmt.Errorf("encoding the credentials file: %w", err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(p), "."+filepath.Base(p)+".*")
	if err != nil {
		return fmt.Errorf("writing the credentials file: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(append(data, '\n')); err != nil {
		tmp.Close()
		return fmt.Errorf("writing the credentials file %s: %w", tmp.Name(), err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("writing the credentials file %s: %w", tmp.Name(), err)
	}
	if err := os.Rename(tmp.Name(), p); err != nil {
		return fmt.Errorf("replacing the credentials file: %w", err)
	}
	return nil
}
