package lock

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestFileName(t *testing.T) {
	for key, want := range map[string]string{
		"sim/sim-0":     "sim_sim-0",
		"sim-0":         "sim-0",
		"a b:c\\d":      "a_b_c_d",
		"orin.nx_01":    "orin.nx_01",
		"../etc/passwd": ".._etc_passwd",
		"dut-é":         "dut-_",
	} {
		assert.Equal(t, want, fileName(key), "key %q", key)
	}
}

func TestInvalidKeys(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	for name, keys := range map[string][]string{
		"none":  nil,
		"empty": {"sim-0", ""},
		"long":  {string(make([]byte, maxKeyLen+1))},
	} {
		_, err := Acquire(ctx, dir, keys, Holder{})
		assert.ErrorIs(t, err, ErrInvalidKey, name)
	}
	_, _, err := ReadHolder(dir, "")
	assert.ErrorIs(t, err, ErrInvalidKey)
}

func TestTimeoutErrorMessage(t *testing.T) {
	since := time.Date(2026, 11, 30, 8, 0, 0, 0, time.UTC)
	foo := Holder{Test: "TestFoo", PID: 1234, Host: "lab1", Since: since, Command: "/tmp/x.test -test.v"}
	err := error(&TimeoutError{
		Keys:    []string{"sim-0"},
		Holders: []Holder{foo},
		Waited:  5*time.Second + 3*time.Millisecond,
		Err:     context.DeadlineExceeded,
	})
	assert.EqualError(t, err, "waited 5s for sim-0: held by TestFoo (pid 1234 on host lab1) "+
		"since 2026-11-30T08:00:00Z; raise DUT_ACQUIRE_TIMEOUT or wait for that test to finish")
	assert.ErrorIs(t, err, ErrTimeout)
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	assert.NotErrorIs(t, err, context.Canceled)
	var te *TimeoutError
	require.ErrorAs(t, err, &te)
	assert.Equal(t, 1234, te.Holders[0].PID)

	err = &TimeoutError{
		Keys:    []string{"sim-0", "sim-1"},
		Holders: []Holder{foo, {}},
		Waited:  250 * time.Millisecond,
		Err:     context.Canceled,
	}
	assert.EqualError(t, err, "waited 250ms for sim-0, sim-1: sim-0 held by TestFoo (pid 1234 on host lab1) "+
		"since 2026-11-30T08:00:00Z; sim-1 held by an unknown process; "+
		"raise DUT_ACQUIRE_TIMEOUT or wait for the holders to finish")
	assert.ErrorIs(t, err, context.Canceled)
	assert.ErrorIs(t, err, ErrTimeout)

	err = &TimeoutError{Keys: []string{"sim-0"}, Holders: []Holder{{}}, Waited: time.Second}
	assert.EqualError(t, err, "waited 1s for sim-0: held by an unknown process; "+
		"raise DUT_ACQUIRE_TIMEOUT or wait for the holder to finish")

	err = &TimeoutError{Keys: []string{"k"}, Holders: []Holder{{PID: 7, Command: "/usr/bin/flash --dut k"}}, Waited: time.Second}
	assert.EqualError(t, err, "waited 1s for k: held by flash (pid 7); raise DUT_ACQUIRE_TIMEOUT or wait for that test to finish")
	err = &TimeoutError{Keys: []string{"k"}, Holders: []Holder{{PID: 7, Command: "  "}}, Waited: time.Second}
	assert.EqualError(t, err, "waited 1s for k: held by a process (pid 7); raise DUT_ACQUIRE_TIMEOUT or wait for that test to finish")

	err = &TimeoutError{Keys: []string{"a", "b"}, Holders: []Holder{foo, {}}, free: []bool{false, true}}
	assert.EqualError(t, err, "waited 0s for a, b: a held by TestFoo (pid 1234 on host lab1) "+
		"since 2026-11-30T08:00:00Z; b was free when the wait ended, but earlier waiters were queued for it; "+
		"raise DUT_ACQUIRE_TIMEOUT or wait for that test to finish")
}

func TestTimeoutErrorIsNotOtherErrors(t *testing.T) {
	assert.False(t, errors.Is(errors.New("x"), ErrTimeout))
}
