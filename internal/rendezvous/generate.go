package rendezvous

// The generated code is committed so that building never needs protoc.
// Generators: protoc-gen-go v1.36.12, protoc-gen-go-grpc v1.6.2, protoc 3.21.12 (Debian protobuf-compiler):
//   go install google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12
//   go install google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.6.2
//go:generate protoc --proto_path=rendezvouspb --go_out=rendezvouspb --go_opt=paths=source_relative --go-grpc_out=rendezvouspb --go-grpc_opt=paths=source_relative rendezvous.proto
