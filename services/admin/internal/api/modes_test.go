package api

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"

	"github.com/connpipe/connpipe/shared/control"
)

// TestModesAnswersTheTable: GET /api/v1/modes, where the page finds its
// choices, answers the rows of control.Modes and control.HashKeys in
// order, with what each needs, and without a token.
func TestModesAnswersTheTable(t *testing.T) {
	mux := newTestAPI(t, &fakeControl{ready: true})
	rec := httptest.NewRecorder()
	mux.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/api/v1/modes", nil))
	if rec.Code != http.StatusOK {
		t.Fatalf("%d %s", rec.Code, rec.Body)
	}
	var got struct {
		Modes []struct {
			Name   string `json:"name"`
			Hashed bool   `json:"hashed"`
			About  string `json:"about"`
		} `json:"modes"`
		HashKeys []struct {
			Name   string   `json:"name"`
			Fields []string `json:"fields"`
			About  string   `json:"about"`
		} `json:"hash_keys"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil {
		t.Fatal(err)
	}
	modes, keys := control.Modes(), control.HashKeys()
	if len(got.Modes) != len(modes) || len(got.HashKeys) != len(keys) {
		t.Fatalf("answer %s: want %d modes and %d keys", rec.Body, len(modes), len(keys))
	}
	for i, m := range modes {
		g := got.Modes[i]
		if g.Name != m.Mode.String() || g.Hashed != m.Hashed || g.About == "" {
			t.Errorf("mode %d: %+v, table %+v", i, g, m)
		}
	}
	for i, k := range keys {
		g := got.HashKeys[i]
		if g.Name != k.Key.String() || !slices.Equal(g.Fields, k.Fields.Names()) || len(g.Fields) == 0 || g.About == "" {
			t.Errorf("hash key %d: %+v, table %+v", i, g, k)
		}
	}
}
