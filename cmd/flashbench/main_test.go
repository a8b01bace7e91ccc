package main

import (
	"testing"
	"time"
)

func TestMedian(t *testing.T) {
	m := median([]sample{{wall: 3 * time.Second}, {wall: time.Second}, {wall: 2 * time.Second}})
	if m.wall != 2*time.Second {
		t.Errorf("median = %v", m.wall)
	}
}
