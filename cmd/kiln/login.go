package main

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/kiln-build/kiln/internal/registry"
)

func newLoginCommand() *cobra.Command {
	var user, password string
	var passwordStdin bool
	var regFlags registryFlags
	cmd := &cobra.Command{
		Use:   "login [flags] REGISTRY",
		Short: "Log in to a registry (credentials go to the docker config, as with docker login)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			host := args[0]
			if user == "" {
				return errors.New("login needs -u USER")
			}
			switch {
			case passwordStdin && password != "":
				return errors.New("give the password with -p or --password-stdin, not both")
			case passwordStdin:
				line, err := bufio.NewReader(os.Stdin).ReadString('\n')
				if err != nil && line == "" {
					return fmt.Errorf("reading the password from standard input: %w", err)
				}
				password = strings.TrimRight(line, "\r\n")
			case password == "":
				return errors.New("login needs --password-stdin (or -p PASSWORD)")
			default:
				fmt.Fprintln(os.Stderr, "kiln: warning: -p puts the password in the process list and shell history; use --password-stdin")
			}
			opts, err := regFlags.options()
			if err != nil {
				return err
			}
			client, err := registry.New(append(opts, registry.WithWarnings(os.Stderr))...)
			if err != nil {
				return err
			}
			if err := client.Login(cmd.Context(), host, user, password); err != nil {
				return err
			}
			if err := registry.SaveLogin(registry.ConfigDir(), host, user, password); err != nil {
				return err
			}
			fmt.Println("Login Succeeded")
			return nil
		},
	}
	cmd.Flags().StringVarP(&user, "username", "u", "", "user name")
	cmd.Flags().StringVarP(&password, "password", "p", "", "password (prefer --password-stdin)")
	cmd.Flags().BoolVar(&passwordStdin, "password-stdin", false, "read the password from standard input")
	regFlags.registerConnection(cmd.Flags())
	return cmd
}

func newLogoutCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "logout REGISTRY",
		Short: "Forget the credentials stored for a registry",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := registry.RemoveLogin(registry.ConfigDir(), args[0]); err != nil {
				return err
			}
			fmt.Printf("Removed login credentials for %s\n", args[0])
			return nil
		},
	}
}
