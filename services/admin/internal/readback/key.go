package readback

import (
	"fmt"

	"github.com/connpipe/connpipe/shared/record"
)

// ParseKey checks a payload-key filter; "" stays "".
func ParseKey(field, s string) (string, error) {
	if len(s) > record.MaxKeyLen {
		return "", fmt.Errorf("%w: %s is %d bytes, at most %d", ErrBadQuery, field, len(s), record.MaxKeyLen)
	}
	return s, nil
}
