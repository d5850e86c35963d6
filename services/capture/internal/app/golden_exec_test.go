package app

import (
	"os/exec"
)

// execGolden reruns cmd/golden/golden.sh (tshark) on the captures in dir,
// writing the golden files to out ("" for testdata/golden).
func execGolden(dir, out string) ([]byte, error) {
	args := []string{dir}
	if out != "" {
		args = append(args, out)
	}
	return exec.Command("../../cmd/golden/golden.sh", args...).CombinedOutput()
}
