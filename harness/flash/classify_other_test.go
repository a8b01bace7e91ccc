//go:build !linux

package flash

func blockClassCases() []classCase { return nil }
