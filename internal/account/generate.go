package account

//go:generate go run gen_common.go
