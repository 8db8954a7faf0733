package sandbox

import (
	"fmt"
	"os"
	"testing"
)

func TestMain(m *testing.M) {
	MaybeRunChild()
	if os.Getenv(envTestUserns) == "1" {
		if _, err := ReexecInUserNamespace(); err != nil {
			fmt.Fprintln(os.Stderr, "entering user namespace:", err)
			os.Exit(2)
		}
	}
	os.Exit(m.Run())
}
