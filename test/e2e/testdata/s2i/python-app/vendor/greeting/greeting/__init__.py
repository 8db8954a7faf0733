def greet(word, name):
    return "%s, %s, from greeting 1.0" % (word, name)
