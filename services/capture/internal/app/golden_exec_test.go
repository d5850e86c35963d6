package app

import (
	"os/exec"
)

// execGolden reruns testdata/golden.sh (tshark) on the captures in dir,
// writing the golden files to out ("" for testdata/golden).
func execGolden(dir, out string) ([]byte, error) {
	args := []string{dir}
	if out != "" {
		args = append(args, out)
	}
	return exec.Command("../../testdata/golden.sh", args...).CombinedOutput()
}
