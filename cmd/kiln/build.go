package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/kiln-build/kiln/internal/build"
	"github.com/kiln-build/kiln/internal/executor"
	"github.com/kiln-build/kiln/internal/sandbox"
	"github.com/kiln-build/kiln/internal/solver"
)

// buildFlags are the flags of `kiln build`, named as docker build and buildah bud name them.
type buildFlags struct {
	commonFlags
	file, target, platform, driver                   string
	digestFile, metadataFile, resultFile             string
	tags, destinations, buildArgs, labels            []string
	secrets, noCacheFilter                           []string
	pull, push, quiet, fsync, noCache, skipPushCheck bool
}

func newBuildCommand() *cobra.Command {
	var f buildFlags
	cmd := &cobra.Command{
		Use:     "build [flags] CONTEXT",
		Aliases: []string{"bud"},
		Short:   "Build an image from a Dockerfile",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			req, err := f.request(args[0])
			if err != nil {
				return err
			}
			mapping, err := sandbox.ReexecInUserNamespace()
			if err != nil {
				return err
			}
			req.SquashOwners = mapping.Mode == sandbox.ModeSingle
			req.Stdin = os.Stdin
			if !f.quiet {
				req.Progress = os.Stderr
			}
			start := time.Now()
			res, err := build.Build(cmd.Context(), req)
			if f.resultFile != "" {
				if werr := writeResult(f.resultFile, req, res, err); werr != nil {
					fmt.Fprintf(os.Stderr, "kiln: warning: %v\n", werr)
				}
			}
			var runErr *executor.RunError
			if f.quiet && errors.As(err, &runErr) {
				// The step's output was not streamed: show how it ended.
				for _, l := range runErr.Tail {
					fmt.Fprintln(os.Stderr, "  | "+l)
				}
			}
			if err != nil {
				return err
			}
			if f.quiet {
				fmt.Println(res.Digest)
				return nil
			}
			fmt.Fprintf(os.Stderr, "built %s in %s\n", strings.Join(res.References, ", "), time.Since(start).Round(time.Millisecond))
			fmt.Println(res.Digest)
			return nil
		},
	}
	fl := cmd.Flags()
	fl.StringVarP(&f.file, "file", "f", "", "Dockerfile to build (default CONTEXT/Dockerfile; - reads standard input)")
	fl.StringArrayVarP(&f.tags, "tag", "t", nil, "name the image (repeatable)")
	fl.StringArrayVar(&f.buildArgs, "build-arg", nil, "set a build argument KEY=VALUE (KEY alone takes it from the environment)")
	fl.StringVar(&f.target, "target", "", "build this stage")
	fl.StringArrayVar(&f.labels, "label", nil, "add a label KEY=VALUE to the image")
	fl.StringVar(&f.platform, "platform", "", "target platform (only the host's is supported)")
	fl.StringVar(&f.network, "network", "host", "network of RUN steps: host or none")
	fl.BoolVar(&f.pull, "pull", false, "pull base images even when the local store has them")
	fl.BoolVar(&f.noCache, "no-cache", false, "run every step, even those the local cache holds")
	fl.StringSliceVar(&f.noCacheFilter, "no-cache-filter", nil, "run every step of these stages (names or numbers), using the cache for the others")
	f.commonFlags.register(fl)
	fl.BoolVar(&f.push, "push", false, "push every -t name to its registry")
	fl.StringVar(&f.digestFile, "digest-file", "", "write the image digest to this file")
	fl.StringVar(&f.metadataFile, "metadata-file", "", "write JSON metadata (digest, references, size, config digest) to this file")
	fl.StringVar(&f.resultFile, "result-file", "", "write the outcome, success or failure, as a kiln.dev BuildResult (JSON) to this file (build pods use /dev/termination-log)")
	fl.StringVar(&f.driver, "storage-driver", "", "snapshotter: overlay or copy (default: overlay where it works)")
	fl.StringArrayVar(&f.destinations, "destination", nil, "push the image to this reference (repeatable; implies pushing it)")
	fl.BoolVar(&f.skipPushCheck, "skip-push-check", false, "do not check push access to the destinations before building")
	fl.StringArrayVar(&f.secrets, "secret", nil, "secret for RUN --mount=type=secret: id=ID,src=FILE or id=ID,env=VAR (repeatable)")
	fl.BoolVarP(&f.quiet, "quiet", "q", false, "print only the image digest")
	fl.BoolVar(&f.fsync, "fsync", false, "let RUN steps really fsync (by default fsync is a no-op inside RUN: layers are committed atomically anyway)")
	return cmd
}

func (f *buildFlags) request(contextDir string) (build.Request, error) {
	contextDir, err := filepath.Abs(contextDir)
	if err != nil {
		return build.Request{}, fmt.Errorf("build context: %w", err)
	}
	req := build.Request{
		ContextDir: contextDir, Dockerfile: f.file, Tags: f.tags, Target: f.target,
		Platform: f.platform, Network: f.network, Pull: f.pull, Push: f.push, NoCache: f.noCache,
		DigestFile: f.digestFile, MetadataFile: f.metadataFile, StoreRoot: f.root,
		StorageDriver: f.driver, Fsync: f.fsync, Destinations: f.destinations, SkipPushCheck: f.skipPushCheck,
	}
	if err := f.apply(&req); err != nil {
		return req, err
	}
	req.NoCacheFilter = f.noCacheFilter
	if f.platform != "" && f.platform != "linux/"+hostArch() {
		return req, fmt.Errorf("--platform %s: kiln builds only for the host platform linux/%s", f.platform, hostArch())
	}
	if req.BuildArgs, err = keyValues("--build-arg", f.buildArgs, true); err != nil {
		return req, err
	}
	if req.Labels, err = keyValues("--label", f.labels, false); err != nil {
		return req, err
	}
	if req.Secrets, err = parseSecrets(f.secrets); err != nil {
		return req, err
	}
	return req, nil
}

// keyValues parses KEY=VALUE flags; with fromEnv, a bare KEY takes its value from the
// environment (and is skipped when unset), as docker build does for --build-arg.
func keyValues(flag string, list []string, fromEnv bool) (map[string]string, error) {
	m := map[string]string{}
	for _, kv := range list {
		k, v, ok := strings.Cut(kv, "=")
		if k == "" {
			return nil, fmt.Errorf("%s %q: the key is empty", flag, kv)
		}
		if !ok {
			if !fromEnv {
				m[k] = ""
				continue
			}
			if v, ok = os.LookupEnv(k); !ok {
				continue
			}
		}
		m[k] = v
	}
	return m, nil
}

// parseSecrets parses --secret values as docker build and buildah do: id=ID plus src=FILE
// (also source=) or env=VAR; type=file|env may be given. A secret given as id only is read from
// the environment variable of the same name when set, else from a file of that name.
func parseSecrets(list []string) (map[string]solver.Secret, error) {
	out := map[string]solver.Secret{}
	for _, v := range list {
		var id, typ string
		var sec solver.Secret
		for _, kv := range strings.Split(v, ",") {
			k, val, _ := strings.Cut(kv, "=")
			switch k {
			case "id":
				id = val
			case "src", "source":
				sec.File = val
			case "env":
				sec.Env = val
			case "type":
				typ = val
			default:
				return nil, fmt.Errorf("--secret %s: unknown key %q (use id=, src= or env=)", v, k)
			}
		}
		if id == "" {
			return nil, fmt.Errorf("--secret %s: id= is required", v)
		}
		if typ == "env" && sec.Env == "" {
			sec.Env, sec.File = sec.File, ""
		}
		if sec.File == "" && sec.Env == "" {
			if _, ok := os.LookupEnv(id); ok {
				sec.Env = id
			} else {
				sec.File = id
			}
		}
		if sec.File != "" {
			abs, err := filepath.Abs(sec.File)
			if err != nil {
				return nil, fmt.Errorf("--secret %s: %w", v, err)
			}
			sec.File = abs
			if _, err := os.Stat(sec.File); err != nil {
				return nil, fmt.Errorf("--secret %s: %w", v, err)
			}
		}
		out[id] = sec
	}
	return out, nil
}
