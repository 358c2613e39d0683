module netloop/bench/gnet

go 1.17

require github.com/panjf2000/gnet/v2 v2.5.7
