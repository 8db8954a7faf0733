// Command kiln builds container images from Dockerfiles without a daemon and without
// privileges. See `kiln --help`.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/kiln-build/kiln/internal/sandbox"
)

func main() {
	sandbox.MaybeRunChild()
	if err := maybeRunKube(os.Args); err != nil {
		fmt.Fprintf(os.Stderr, "kiln: error: %v\n", err)
		os.Exit(1)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	root := &cobra.Command{
		Use:           "kiln",
		Short:         "Build container images from Dockerfiles, rootless and daemonless",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(newBuildCommand(), newImagesCommand(), newDoctorCommand(), newLoginCommand(), newLogoutCommand(),
		newSourceCommand(), newS2ICommand())
	stopProfiles := addProfileFlags(root)
	err := root.ExecuteContext(ctx)
	if perr := stopProfiles(); err == nil {
		err = perr
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "kiln: error: %v\n", err)
		os.Exit(1)
	}
}
