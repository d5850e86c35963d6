package app

import (
	"os/exec"
)

// execGolden reruns testdata/golden.sh (tshark) on the sample directory.
func execGolden(dir string) ([]byte, error) {
	return exec.Command("../../testdata/golden.sh", dir).CombinedOutput()
}
