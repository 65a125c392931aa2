module github.com/gorovod/gorovod/nccl/cuadapter

go 1.26.7

require (
	github.com/gorovod/gorovod v0.0.0-00010101000000-000000000000
	gorgonia.org/cu v0.9.6
)

require (
	github.com/google/uuid v1.6.0 // indirect
	github.com/pkg/errors v0.9.1 // indirect
)

replace github.com/gorovod/gorovod => ../..
