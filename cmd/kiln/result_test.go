package main

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	kilnv1 "github.com/kiln-build/kiln/api/v1alpha1"
	"github.com/kiln-build/kiln/internal/build"
)

// TestResultMatchesTheAPI checks that what kiln build writes is what the controller reads.
func TestResultMatchesTheAPI(t *testing.T) {
	dir := t.TempDir()
	req := build.Request{Destinations: []string{"r.example/app:v1"}}
	res := &build.Result{Digest: v1.Hash{Algorithm: "sha256", Hex: "ab"}, Stages: []build.Stage{{Name: build.StagePush, Start: time.Unix(1700000000, 0), Duration: 1500 * time.Millisecond}}}
	ok := filepath.Join(dir, "ok.json")
	if err := writeResult(ok, req, res, nil); err != nil {
		t.Fatal(err)
	}
	failed := filepath.Join(dir, "failed.json")
	if err := writeResult(failed, req, nil, &build.StageError{Stage: build.StagePush, Err: errors.New("denied")}); err != nil {
		t.Fatal(err)
	}
	var got kilnv1.BuildResult
	data, _ := os.ReadFile(ok)
	if err := json.Unmarshal(data, &got); err != nil {
		t.Fatal(err)
	}
	if got.Image != "r.example/app:v1" || got.Digest != "sha256:ab" || len(got.Stages) != 1 ||
		got.Stages[0].Name != kilnv1.StagePushImage || got.Stages[0].DurationMilliseconds != 1500 || !got.Stages[0].StartTime.Time.Equal(time.Unix(1700000000, 0)) {
		t.Errorf("success read as %+v", got)
	}
	data, _ = os.ReadFile(failed)
	got = kilnv1.BuildResult{}
	if err := json.Unmarshal(data, &got); err != nil || got.Reason != kilnv1.ReasonPushFailed || got.Message != "denied" {
		t.Errorf("failure read as %+v (%v)", got, err)
	}
}
