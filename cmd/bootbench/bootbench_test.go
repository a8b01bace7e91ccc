package main

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestAdaptArgs(t *testing.T) {
	args := []string{"/usr/bin/qemu-system-x86_64", "-name", "qemu-0", "-S", "-pidfile", "/d/qemu-0.pid",
		"-qmp", "unix:/tmp/jsq-1/qmp,server=on,wait=off",
		"-chardev", "socket,id=ser0,path=/tmp/jsq-1/con,server=on,wait=off", "-serial", "chardev:ser0",
		"-drive", "file=/d/qemu-0.disk,format=raw,if=virtio"}
	dir, err := runDirOf(args)
	require.NoError(t, err)
	require.Equal(t, "/tmp/jsq-1", dir)
	out, did, err := adaptArgs(args, [][2]string{{dir + "/", "/b/run/"}, {"/d/qemu-0.disk", "/b/disk.img"}, {"/d/qemu-0.pid", "/b/qemu.pid"}})
	require.NoError(t, err)
	assert.Len(t, did, 3)
	assert.Equal(t, []string{"/usr/bin/qemu-system-x86_64", "-name", "qemu-0", "-S", "-pidfile", "/b/qemu.pid",
		"-qmp", "unix:/b/run/qmp,server=on,wait=off",
		"-chardev", "socket,id=ser0,path=/b/run/con,server=on,wait=off", "-serial", "chardev:ser0",
		"-drive", "file=/b/disk.img,format=raw,if=virtio"}, out)
	assert.Equal(t, "/tmp/jsq-1/qmp,server=on,wait=off", args[7][len("unix:"):], "the input is not modified")

	_, _, err = adaptArgs(args, [][2]string{{"/nowhere", "/b"}})
	require.ErrorContains(t, err, "does not name /nowhere")
	_, _, err = adaptArgs(args, [][2]string{{"/d/qemu-0.disk", "/b,c"}})
	require.ErrorContains(t, err, "comma")
	_, err = runDirOf([]string{"qemu", "-S"})
	require.Error(t, err)
}

func TestMedianAndCounts(t *testing.T) {
	assert.Equal(t, 2*time.Second, median([]time.Duration{3 * time.Second, time.Second, 2 * time.Second}))
	assert.Equal(t, 1500*time.Millisecond, median([]time.Duration{2 * time.Second, time.Second}))
	assert.Equal(t, int64(0), median([]int64(nil)))

	ns, err := parseCounts(" 1, 2,4,")
	require.NoError(t, err)
	assert.Equal(t, []int{1, 2, 4}, ns)
	_, err = parseCounts("1,x")
	require.Error(t, err)
	_, err = parseCounts("0")
	require.Error(t, err)
	assert.Equal(t, `a 'b c' 'it'\''s'`, shellQuote([]string{"a", "b c", "it's"}))
}
