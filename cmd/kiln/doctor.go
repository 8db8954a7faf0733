package main

import (
	"fmt"
	"runtime"

	"github.com/spf13/cobra"

	"github.com/kiln-build/kiln/internal/build"
	"github.com/kiln-build/kiln/internal/sandbox"
)

func newDoctorCommand() *cobra.Command {
	var root string
	cmd := &cobra.Command{
		Use:   "doctor",
		Short: "Report what this environment allows and how kiln will build here",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if root == "" {
				root = build.DefaultStoreRoot()
			}
			report := sandbox.Detect(cmd.Context(), root)
			fmt.Print(report.String())
			fmt.Println(report.Plan())
			return nil
		},
	}
	cmd.Flags().StringVar(&root, "root", "", "store directory to check (default ~/.local/share/kiln)")
	return cmd
}

func hostArch() string { return runtime.GOARCH }
