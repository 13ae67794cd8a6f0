package hooks

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"
)

func TestPoststartInput(t *testing.T) {
	self := os.Getpid()
	good := fmt.Sprintf(`{"ociVersion":"1.0.2","id":"c1","status":"running","pid":%d,"bundle":"/b","annotations":{"ctcr.checkpoint.dir":"/ck","ctcr.checkpoint.delay":"1500ms","ctcr.checkpoint.ready-file":"/data/../data/ready"}}`, self)
	t.Run("a full state gives a plan", func(t *testing.T) {
		st, err := ReadState(strings.NewReader(good))
		if err != nil {
			t.Fatal(err)
		}
		p, err := PoststartPlan(st)
		if err != nil {
			t.Fatal(err)
		}
		if p.ID != "c1" || p.Pid != self || p.Dir != "/ck" || p.Delay != 1500*time.Millisecond || p.ReadyFile != "/data/ready" || p.Timeout != DefaultTimeout || p.Start == 0 {
			t.Errorf("plan %+v", p)
		}
	})
	for _, tc := range []struct{ name, state string }{
		{"malformed JSON is refused", `{"id":`},
		{"a state without id is refused", `{"pid":1}`},
		{"an id with a slash is refused", `{"id":"../x","pid":1}`},
		{"a state without pid is refused", `{"id":"c1","annotations":{"ctcr.checkpoint.dir":"/ck"}}`},
		{"a state without ctcr.checkpoint.dir is refused", fmt.Sprintf(`{"id":"c1","pid":%d}`, self)},
		{"a relative checkpoint dir is refused", fmt.Sprintf(`{"id":"c1","pid":%d,"annotations":{"ctcr.checkpoint.dir":"ck"}}`, self)},
		{"a delay that is no duration is refused", fmt.Sprintf(`{"id":"c1","pid":%d,"annotations":{"ctcr.checkpoint.dir":"/ck","ctcr.checkpoint.delay":"5"}}`, self)},
		{"a relative ready file is refused", fmt.Sprintf(`{"id":"c1","pid":%d,"annotations":{"ctcr.checkpoint.dir":"/ck","ctcr.checkpoint.ready-file":"ready"}}`, self)},
		{"a pre-copy that is no boolean is refused", fmt.Sprintf(`{"id":"c1","pid":%d,"annotations":{"ctcr.checkpoint.dir":"/ck","ctcr.checkpoint.pre-copy":"yes please"}}`, self)},
		{"a zero timeout is refused", fmt.Sprintf(`{"id":"c1","pid":%d,"annotations":{"ctcr.checkpoint.dir":"/ck","ctcr.checkpoint.timeout":"0s"}}`, self)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st, err := ReadState(strings.NewReader(tc.state))
			if err == nil {
				_, err = PoststartPlan(st)
			}
			if !errors.Is(err, ErrBadState) {
				t.Errorf("%s: error %v, want ErrBadState", tc.state, err)
			}
		})
	}
	t.Run("an oversized state is refused", func(t *testing.T) {
		_, err := ReadState(strings.NewReader(`{"id":"c1","x":"` + strings.Repeat("a", maxState) + `"}`))
		if !errors.Is(err, ErrBadState) {
			t.Errorf("error %v, want ErrBadState", err)
		}
	})
}
