// Command kiln-kube is kiln's client for builds on Kubernetes: kiln start-build, logs,
// cancel-build and get builds. kiln runs it for those verbs, so users type `kiln logs ...`;
// it is a binary of its own so that the builder, which starts a process for every RUN step,
// does not carry the Kubernetes client libraries and their start-up cost.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	root := &cobra.Command{
		Use:           "kiln",
		Short:         "Builds on Kubernetes: start them, follow their logs, cancel and list them",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(newGetCommand(), newLogsCommand(), newStartBuildCommand(), newCancelBuildCommand())
	if err := root.ExecuteContext(ctx); err != nil {
		fmt.Fprintf(os.Stderr, "kiln: error: %v\n", err)
		os.Exit(1)
	}
}
