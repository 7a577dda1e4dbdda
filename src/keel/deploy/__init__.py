"""Model servers Keel runs itself: supervised local llama.cpp processes."""
