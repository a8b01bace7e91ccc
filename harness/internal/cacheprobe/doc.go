// Package cacheprobe holds one test that harness's
// TestHardwareResultsAreNeverCached runs with the real go command, twice, to
// prove that the result of a test that acquired a DUT never comes from go
// test's cache. It has no code of its own.
package cacheprobe
