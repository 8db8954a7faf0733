/* hello.c: the program of the gcc workload. The rebuild workload appends a
 * comment to this file to force the COPY and compile steps to run again. */
#include <stdio.h>
#include <string.h>

static unsigned long checksum(const char *s)
{
	unsigned long h = 5381;
	while (*s)
		h = h * 33 + (unsigned char)*s++;
	return h;
}

int main(void)
{
	const char *msg = "hello from the kiln benchmark";
	printf("%s (checksum %lu, %zu bytes)\n", msg, checksum(msg), strlen(msg));
	return 0;
}
