module github.com/jumpstarter-dev/jumpstarter-go

go 1.26.0

require (
	connectrpc.com/connect v1.21.1
	github.com/google/gousb v1.1.3
	github.com/klauspost/compress v1.20.3
	github.com/spf13/cobra v1.10.2
	github.com/stretchr/testify v1.12.1
	github.com/ulikunitz/xz v0.5.17
	go.bug.st/serial v1.8.0
	golang.org/x/sys v0.43.0
	golang.org/x/term v0.42.0
	google.golang.org/protobuf v1.36.12
)

require (
	github.com/inconshreveable/mousetrap v1.1.0 // indirect
	github.com/spf13/pflag v1.0.9 // indirect
	go.yaml.in/yaml/v3 v3.0.5 // indirect
)
