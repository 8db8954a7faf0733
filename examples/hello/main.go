// Command hello is the program inside kiln's example image: it prints one line.
// `make hello` builds it statically and then builds examples/hello/Dockerfile.
package main

import "fmt"

func main() {
	fmt.Println("hello from an image built by kiln")
}
