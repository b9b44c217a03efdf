CITIES = ("Oslo", "Lima", "Kyoto")
