from memory_layer_cli import main

main()
