package main

import (
	"fmt"
	"os"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/kiln-build/kiln/internal/build"
	"github.com/kiln-build/kiln/internal/store"
)

func newImagesCommand() *cobra.Command {
	var root string
	var quiet bool
	cmd := &cobra.Command{
		Use:   "images",
		Short: "List the images in the local store",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if root == "" {
				root = build.DefaultStoreRoot()
			}
			st, err := store.Open(root)
			if err != nil {
				return fmt.Errorf("opening the store %s: %w", root, err)
			}
			defer st.Close()
			list, err := st.Images()
			if err != nil {
				return fmt.Errorf("listing images in %s: %w", root, err)
			}
			if quiet {
				for _, im := range list {
					fmt.Println(im.Digest)
				}
				return nil
			}
			w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "NAME\tDIGEST\tCREATED\tSIZE")
			for _, im := range list {
				names := im.Names
				if len(names) == 0 {
					names = []string{"<none>"}
				}
				for _, n := range names {
					fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", n, im.Digest.String()[:19], im.Created.Format(time.RFC3339), humanSize(im.Size))
				}
			}
			return w.Flush()
		},
	}
	cmd.Flags().StringVar(&root, "root", "", "store directory (default ~/.local/share/kiln)")
	cmd.Flags().BoolVarP(&quiet, "quiet", "q", false, "print only digests")
	return cmd
}

func humanSize(n int64) string {
	const unit = 1000
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	f, i := float64(n), 0
	for f >= unit && i < 4 {
		f /= unit
		i++
	}
	return fmt.Sprintf("%.1f %cB", f, " kMGT"[i])
}
