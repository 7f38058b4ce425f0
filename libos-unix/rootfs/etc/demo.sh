# The default boot's script: libos-unix runs it with its shell, beside
# libos-gc and libos-rt (and the network service).
echo "sh: hello from pid-1's children, on the exokernel"
cat /etc/motd
mkdir /tmp/demo
echo one > /tmp/demo/list
echo two >> /tmp/demo/list
echo three >> /tmp/demo/list
cat /tmp/demo/list | grep t | wc -l
ls /tmp/demo && rm -r /tmp/demo && echo "cleaned up"
false || echo "false failed, as it should"
memhog 64 16
ps
