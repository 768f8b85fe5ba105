module mcptap.test/peers

go 1.19
