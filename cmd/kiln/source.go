package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/kiln-build/kiln/internal/source"
)

// newSourceCommand is what a build pod's init container runs: it fetches the build's input
// into --dest.
func newSourceCommand() *cobra.Command {
	var dest, gitURI, ref, authDir, asFile, dockerfileEnv, dockerfilePath string
	var stdin bool
	cmd := &cobra.Command{
		Use:   "source --dest DIR (--git URI [--ref REF] [--auth-dir DIR] | --stdin [--as-file NAME]) [--dockerfile-from-env VAR --dockerfile-path PATH]",
		Short: "Fetch a build's source: a git clone, or an upload on standard input (build pods run this)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if dest == "" {
				return errors.New("source needs --dest")
			}
			switch {
			case gitURI != "" && stdin:
				return errors.New("give --git or --stdin, not both")
			case gitURI != "":
				commit, err := source.Clone(cmd.Context(), source.Git{URI: gitURI, Ref: ref, AuthDir: authDir}, dest, os.Stderr)
				if err != nil {
					return err
				}
				fmt.Fprintf(os.Stderr, "cloned %s at %s\n", gitURI, commit.ID)
			case stdin && asFile != "":
				if err := source.ReceiveFile(os.Stdin, dest, asFile); err != nil {
					return err
				}
			case stdin:
				if err := source.Receive(cmd.Context(), os.Stdin, dest); err != nil {
					return err
				}
			default:
				if err := os.MkdirAll(dest, 0o755); err != nil {
					return err
				}
			}
			if dockerfileEnv != "" {
				if err := source.WriteInline(dest, dockerfilePath, os.Getenv(dockerfileEnv)); err != nil {
					return err
				}
			}
			return nil
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&dest, "dest", "", "directory to fetch into")
	fl.StringVar(&gitURI, "git", "", "git repository to clone")
	fl.StringVar(&ref, "ref", "", "branch, tag or commit to check out (default: the remote's HEAD)")
	fl.StringVar(&authDir, "auth-dir", "", "git credentials: username and password, or ssh-privatekey [and known_hosts]")
	fl.BoolVar(&stdin, "stdin", false, "read a tar archive (optionally gzipped) from standard input")
	fl.StringVar(&asFile, "as-file", "", "with --stdin: standard input is one file with this name")
	fl.StringVar(&dockerfileEnv, "dockerfile-from-env", "", "write the Dockerfile held in this environment variable")
	fl.StringVar(&dockerfilePath, "dockerfile-path", "Dockerfile", "where the inline Dockerfile goes, inside --dest")
	return cmd
}
