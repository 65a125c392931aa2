package rendezvous

// The generated code is committed so that building never needs protoc.
// Generators: protoc-gen-go v1.35.1, protoc-gen-go-grpc v1.5.1.
//go:generate protoc --proto_path=rendezvouspb --go_out=rendezvouspb --go_opt=paths=source_relative --go-grpc_out=rendezvouspb --go-grpc_opt=paths=source_relative rendezvous.proto
