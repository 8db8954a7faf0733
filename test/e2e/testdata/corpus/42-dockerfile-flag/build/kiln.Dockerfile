FROM localhost:5000/busybox
# paths stay relative to the context (the case directory), not to this file's directory
COPY data.txt /data.txt
CMD ["cat", "/data.txt"]
