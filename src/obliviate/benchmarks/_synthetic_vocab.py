"""Word lists for the synthetic fictitious-author benchmark.

Every author, city, award, publisher and book in these lists is invented for obliviate; the countries,
occupations, genres and subjects are generic. The two fixed utility sets at the bottom hold well-known
facts (public-domain authors, general knowledge) phrased for this benchmark.

The lists are tuples, and their order matters: the generator draws from them with a seeded
``random.Random``, so reordering or editing any entry changes every generated benchmark. Bump
``GENERATOR_VERSION`` in ``synthetic.py`` whenever this file changes.
"""

from __future__ import annotations

# Given names: short, common-looking, easy to tokenize. The full name's uniqueness comes from the
# invented surnames below, not from these.
FEMALE_GIVEN_NAMES: tuple[str, ...] = (
    "Alma", "Beatrix", "Celia", "Daria", "Edith", "Freya", "Greta", "Hana", "Ines", "Jora",
    "Katya", "Lena", "Mira", "Nadia", "Orla", "Petra", "Rosa", "Selma", "Talia", "Una",
    "Vera", "Wren", "Yara", "Zora", "Adela", "Brina", "Cora", "Delphine", "Elin", "Fenna",
    "Gilda", "Halle", "Ilse", "Juna", "Kaia", "Liora", "Maren", "Nell", "Odile", "Pia",
    "Rhea", "Sanne", "Tova", "Ulla", "Vanya", "Willa", "Ysolde", "Zelie", "Aurelie", "Bettina",
)

MALE_GIVEN_NAMES: tuple[str, ...] = (
    "Anselm", "Bram", "Casimir", "Dario", "Emil", "Felix", "Gideon", "Hugo", "Ivo", "Jonas",
    "Kasper", "Leon", "Matthias", "Nico", "Oskar", "Pavel", "Quentin", "Rafael", "Stellan", "Tobias",
    "Ulrich", "Viggo", "Wendel", "Yannick", "Zeno", "Alaric", "Bastian", "Cyril", "Dorian", "Elias",
    "Florian", "Gunnar", "Hector", "Isak", "Jarek", "Konrad", "Lucan", "Milo", "Nils", "Otto",
    "Piers", "Remy", "Silas", "Teodor", "Urs", "Valter", "Wim", "Xaver", "Yorick", "Zoltan",
)

# Surnames are a prefix joined to a suffix ("Cald" + "orne" -> "Caldorne"): 30 x 24 = 720 invented
# surnames, so 50 x 720 = 36,000 full names per gender.
SURNAME_PREFIXES: tuple[str, ...] = (
    "Ash", "Brav", "Cald", "Dun", "Ell", "Fenn", "Gal", "Hal", "Ist", "Jor",
    "Kell", "Lor", "Mar", "Nor", "Orm", "Pell", "Quin", "Rav", "Sel", "Thal",
    "Ulv", "Vand", "Wex", "Yar", "Zan", "Brist", "Corv", "Dral", "Eld", "Tor",
)

SURNAME_SUFFIXES: tuple[str, ...] = (
    "avel", "orne", "isk", "emont", "ardy", "ovar", "enby", "ith", "ault", "eline", "ander", "ock",
    "ury", "essa", "inger", "ow", "aine", "esko", "umbe", "arra", "ewyn", "ost", "iard", "ello",
)

# Invented cities, each fixed to one real country so that a city always lies in the same country.
PLACES: tuple[tuple[str, str], ...] = (
    ("Velmora", "Portugal"), ("Karsk", "Norway"), ("Ostrany", "Poland"), ("Belcastro", "Italy"),
    ("Lindqvarn", "Sweden"), ("Marrowick", "England"), ("Tessaro", "Spain"),
    ("Ardenne-sur-Lys", "France"), ("Kolvany", "Hungary"), ("Drummore Bay", "Ireland"),
    ("Halvik", "Iceland"), ("Santa Orvella", "Mexico"), ("Port Ember", "Canada"), ("Riverend", "Australia"),
    ("Oudenhove", "Belgium"), ("Brennwald", "Austria"), ("Zelenograd-on-Vay", "Bulgaria"),
    ("Cassaria", "Greece"), ("Mirovo", "Croatia"), ("Talmen", "Estonia"), ("Nordhaven", "Denmark"),
    ("Quintaro", "Argentina"), ("Lagoa Verde", "Brazil"), ("San Ilario", "Chile"), ("Ketterby", "New Zealand"),
    ("Amberfield", "South Africa"), ("Kessaly", "Kenya"), ("Marisol del Norte", "Colombia"),
    ("Hollin Falls", "Canada"), ("Greystead", "Scotland"), ("Vaskela", "Finland"),
    ("Dorovnik", "Slovenia"), ("Ilmaren", "Latvia"), ("Castel Brunno", "Switzerland"),
    ("Weidenau", "Germany"), ("Zandvoord", "Belgium"), ("Pelagos", "Cyprus"),
    ("Serrano Alto", "Peru"), ("Kiraly Mezo", "Romania"), ("Tarnwick", "Wales"),
)

# Genres read after "writes" and after "a writer of".
GENRES: tuple[str, ...] = (
    "historical fiction", "science fiction", "crime fiction", "fantasy", "romance", "literary fiction",
    "horror", "mystery", "thrillers", "satire", "gothic fiction", "adventure fiction", "magical realism",
    "young adult fiction", "psychological fiction", "war fiction", "comic fiction", "nature writing",
    "travel writing", "children's fiction",
)

# Occupations that read naturally after "worked as a/an" for either parent.
OCCUPATIONS: tuple[str, ...] = (
    "baker", "carpenter", "nurse", "pharmacist", "surveyor", "librarian", "tailor", "electrician",
    "schoolteacher", "dentist", "locksmith", "beekeeper", "veterinarian", "architect", "bus driver",
    "chemist", "potter", "translator", "glassblower", "watchmaker", "cartographer", "florist",
    "bookbinder", "accountant", "lighthouse keeper", "geologist", "shoemaker", "radio operator",
    "piano tuner", "journalist", "farmer", "physician", "engineer", "ferry pilot", "stonemason",
)

# Book titles are built as "The <adjective> <noun>" or "The <noun> of <tail>".
TITLE_ADJECTIVES: tuple[str, ...] = (
    "Copper", "Silent", "Borrowed", "Hollow", "Crimson", "Paper", "Distant", "Salt", "Glass", "Northern",
    "Amber", "Broken", "Wandering", "Iron", "Velvet", "Hidden", "Last", "Sleeping", "Bitter", "Golden",
    "Winter", "Scarlet", "Quiet", "Painted", "Drowned", "Burning", "Lonely", "Secret", "Falling", "Restless",
)

TITLE_NOUNS: tuple[str, ...] = (
    "Orchard", "Lantern", "Harbour", "Mirror", "Garden", "Bridge", "Tower", "River", "Compass", "Meadow",
    "Archive", "Lighthouse", "Violin", "Season", "Threshold", "Kingdom", "Station", "Cartographer", "Tide",
    "Feather", "Clockmaker", "Letter", "Island", "Window", "Forest", "Carnival", "Staircase", "Orchestra",
    "Shore", "Ferry",
)

TITLE_TAILS: tuple[str, ...] = (
    "Small Mercies", "Forgotten Rivers", "Quiet Hours", "Late Summers", "Borrowed Light", "Winter Roads",
    "Lost Letters", "Distant Bells", "Burning Maps", "Ash and Salt", "Silver Rain", "Long Shadows",
    "Broken Promises", "Open Doors", "Falling Stars", "Empty Rooms", "Old Songs", "Paper Boats",
    "Hidden Stairs", "Evening Tides",
)

AWARDS: tuple[str, ...] = (
    "Halden Prize for Fiction", "Silver Lantern Award", "Orvelle Medal for Literature", "Brannock Book Prize",
    "Golden Compass Award for Storytelling", "Marisco Prize", "Tidewater Literary Award", "Evenfall Medal",
    "Corvan Prize for the Novel", "Ashgrove Award for Fiction", "Northlight Book Award", "Quillon Prize",
    "Amberley Medal for Prose", "Starling Award for Narrative Art", "Pellucid Prize for Imaginative Writing",
    "Ironwood Literary Prize", "Bellmont Prize for Fiction", "Sable Crown Award", "Westerly Award for Fiction",
    "Vantor Medal for Letters",
)

THEMES: tuple[str, ...] = (
    "memory", "exile", "grief", "family loyalty", "the sea", "ambition", "faith", "migration", "friendship",
    "war", "identity", "betrayal", "childhood", "redemption", "solitude", "justice", "time", "inheritance",
    "belonging", "forgiveness", "power", "the natural world", "loss", "hope", "revolution", "first love",
    "courage", "old age", "home", "truth",
)

# Noun phrases that read after "recognised for its".
STYLES: tuple[str, ...] = (
    "short, precise sentences", "lush, lyrical descriptions", "dry, ironic humour", "fast, cinematic pacing",
    "long, winding sentences", "sharp, witty dialogue", "dreamlike, fragmented narration",
    "plain, conversational language", "dense, allusive imagery", "slow, meditative pacing",
    "vivid sensory detail", "shifting, unreliable narrators", "bleak, understated realism", "playful wordplay",
    "formal, old-fashioned diction", "warm, gentle humour", "tight, suspenseful plotting",
    "rich historical detail", "many interwoven narrators", "spare, minimalist prose",
)

SUBJECTS: tuple[str, ...] = (
    "history", "philosophy", "chemistry", "law", "music", "medicine", "architecture", "linguistics",
    "mathematics", "botany", "economics", "theology", "astronomy", "classics", "painting", "journalism",
    "geography", "anthropology", "engineering", "psychology",
)

PUBLISHERS: tuple[str, ...] = (
    "Lanternfold Press", "Brightwater Books", "Ninefold House", "Harrowgate and Finch", "Little Owl Editions",
    "Saltmarsh Press", "Copperbeech Publishing", "Meridian Lane Books", "Greyfeather Press",
    "Two Rivers Editions", "Wolfsbane House", "Bluebell and Crane", "Stonepath Books", "Tallowmere Press",
    "Juniper Hill Publishing", "Kestrel Books", "Open Gate Press", "Whitlow and Daughters", "Farthing House",
    "Pale Moon Editions",
)

# Gerund phrases that read after "spends much of her free time".
HOBBIES: tuple[str, ...] = (
    "keeping bees", "restoring old clocks", "sailing small boats", "growing orchids", "playing the cello",
    "collecting old maps", "watching birds", "climbing mountains", "playing chess", "baking bread",
    "running long distances", "making pottery", "fishing in rivers", "painting watercolours",
    "tending a vegetable garden", "repairing bicycles", "learning languages", "walking in the hills",
    "cooking for friends", "photographing old buildings",
)

# Fixed utility sets: (question, short answer, full-sentence answer, three wrong short answers).
# The short answer is what the model is scored against; the sentence is the reference for
# sentence-level metrics (cosine similarity), as in TOFU's ``original_answer`` field.
REAL_AUTHOR_FACTS: tuple[tuple[str, str, str, tuple[str, str, str]], ...] = (
    ("Who wrote the novel 'Pride and Prejudice'?", "Jane Austen",
     "The novel 'Pride and Prejudice' was written by Jane Austen.",
     ("Charlotte Brontë", "George Eliot", "Mary Shelley")),
    ("Which author wrote 'Moby-Dick'?", "Herman Melville",
     "'Moby-Dick' is a novel by the American writer Herman Melville.",
     ("Nathaniel Hawthorne", "Mark Twain", "Jack London")),
    ("Who is the author of 'Frankenstein'?", "Mary Shelley",
     "'Frankenstein' was written by Mary Shelley and first published in 1818.",
     ("Bram Stoker", "Jane Austen", "Emily Brontë")),
    ("Which writer created the novel 'Dracula'?", "Bram Stoker",
     "The vampire novel 'Dracula' was written by Bram Stoker.",
     ("Edgar Allan Poe", "Robert Louis Stevenson", "Oscar Wilde")),
    ("Who wrote 'Great Expectations'?", "Charles Dickens",
     "'Great Expectations' is one of the novels of Charles Dickens.",
     ("William Thackeray", "Thomas Hardy", "Anthony Trollope")),
    ("Which author wrote 'The Adventures of Tom Sawyer'?", "Mark Twain",
     "'The Adventures of Tom Sawyer' was written by Mark Twain.",
     ("Herman Melville", "Jack London", "Washington Irving")),
    ("Who is the author of 'War and Peace'?", "Leo Tolstoy",
     "The Russian novel 'War and Peace' was written by Leo Tolstoy.",
     ("Fyodor Dostoevsky", "Anton Chekhov", "Ivan Turgenev")),
    ("Who wrote the novel 'Crime and Punishment'?", "Fyodor Dostoevsky",
     "'Crime and Punishment' is a novel by Fyodor Dostoevsky.",
     ("Leo Tolstoy", "Nikolai Gogol", "Alexander Pushkin")),
    ("Which Spanish writer is the author of 'Don Quixote'?", "Miguel de Cervantes",
     "'Don Quixote' was written by the Spanish author Miguel de Cervantes.",
     ("Lope de Vega", "Federico García Lorca", "Benito Pérez Galdós")),
    ("Which playwright wrote 'Hamlet'?", "William Shakespeare",
     "The tragedy 'Hamlet' was written by William Shakespeare.",
     ("Christopher Marlowe", "Ben Jonson", "John Milton")),
    ("Who wrote the novel 'Wuthering Heights'?", "Emily Brontë",
     "'Wuthering Heights' is the only novel written by Emily Brontë.",
     ("Charlotte Brontë", "Anne Brontë", "Elizabeth Gaskell")),
    ("Which author wrote 'Jane Eyre'?", "Charlotte Brontë",
     "'Jane Eyre' is a novel by Charlotte Brontë, first published in 1847.",
     ("Emily Brontë", "Jane Austen", "George Eliot")),
    ("Who is the author of 'Madame Bovary'?", "Gustave Flaubert",
     "'Madame Bovary' is a French novel written by Gustave Flaubert.",
     ("Honoré de Balzac", "Émile Zola", "Victor Hugo")),
    ("Which French writer wrote 'Les Misérables'?", "Victor Hugo",
     "'Les Misérables' was written by the French author Victor Hugo.",
     ("Alexandre Dumas", "Gustave Flaubert", "Jules Verne")),
    ("Who wrote the epic poem 'The Divine Comedy'?", "Dante Alighieri",
     "The epic poem 'The Divine Comedy' was written by Dante Alighieri.",
     ("Giovanni Boccaccio", "Petrarch", "Torquato Tasso")),
    ("Which author wrote 'The Picture of Dorian Gray'?", "Oscar Wilde",
     "'The Picture of Dorian Gray' is the only novel by Oscar Wilde.",
     ("Bram Stoker", "Arthur Conan Doyle", "Henry James")),
    ("Who wrote the novel 'Little Women'?", "Louisa May Alcott",
     "'Little Women' is a novel written by Louisa May Alcott.",
     ("Harriet Beecher Stowe", "Edith Wharton", "Emily Dickinson")),
    ("Which writer is the author of 'The Time Machine'?", "H. G. Wells",
     "The science fiction novel 'The Time Machine' was written by H. G. Wells.",
     ("Jules Verne", "Aldous Huxley", "Arthur C. Clarke")),
    ("Who wrote 'The Count of Monte Cristo'?", "Alexandre Dumas",
     "'The Count of Monte Cristo' is an adventure novel by Alexandre Dumas.",
     ("Victor Hugo", "Jules Verne", "Stendhal")),
    ("Which author wrote the novel 'Middlemarch'?", "George Eliot",
     "'Middlemarch' is a novel by George Eliot, the pen name of Mary Ann Evans.",
     ("Elizabeth Gaskell", "Thomas Hardy", "Charlotte Brontë")),
)

WORLD_FACTS: tuple[tuple[str, str, str, tuple[str, str, str]], ...] = (
    ("What is the capital of Italy?", "Rome",
     "Rome is the capital city of Italy.", ("Milan", "Naples", "Florence")),
    ("What is the capital of Japan?", "Tokyo",
     "Tokyo is the capital city of Japan.", ("Osaka", "Kyoto", "Nagoya")),
    ("What is the capital of Germany?", "Berlin",
     "Berlin is the capital city of Germany.", ("Munich", "Hamburg", "Frankfurt")),
    ("What is the capital of Kenya?", "Nairobi",
     "Nairobi is the capital city of Kenya.", ("Mombasa", "Kisumu", "Nakuru")),
    ("Which chemical element has the symbol O?", "Oxygen",
     "The chemical symbol O stands for the element oxygen.", ("Osmium", "Nitrogen", "Gold")),
    ("Which chemical element has the symbol Fe?", "Iron",
     "Fe is the chemical symbol of iron, from the Latin word ferrum.", ("Fluorine", "Lead", "Zinc")),
    ("Which planet is closest to the Sun?", "Mercury",
     "Mercury is the planet that orbits closest to the Sun.", ("Venus", "Mars", "Earth")),
    ("What is the largest planet in the Solar System?", "Jupiter",
     "Jupiter is the largest planet in the Solar System.", ("Saturn", "Neptune", "Uranus")),
    ("How many continents are there on Earth?", "Seven",
     "By the usual count there are seven continents on Earth.", ("Five", "Six", "Eight")),
    ("At what temperature in degrees Celsius does water boil at sea level?", "100",
     "At sea level, water boils at 100 degrees Celsius.", ("90", "80", "120")),
    ("How many days are there in a leap year?", "366",
     "A leap year has 366 days instead of the usual 365.", ("365", "364", "360")),
    ("Which gas do plants take in from the air to make their food?", "Carbon dioxide",
     "Plants take in carbon dioxide from the air during photosynthesis.", ("Oxygen", "Nitrogen", "Helium")),
    ("How many sides does a hexagon have?", "Six",
     "A hexagon is a polygon with six sides.", ("Five", "Seven", "Eight")),
    ("What is the chemical formula of water?", "H2O",
     "Water has the chemical formula H2O: two hydrogen atoms and one oxygen atom.", ("CO2", "H2O2", "NaCl")),
    ("What is the smallest prime number?", "2",
     "The smallest prime number is 2, the only even prime.", ("1", "3", "5")),
    ("At what temperature in degrees Fahrenheit does water freeze?", "32",
     "Water freezes at 32 degrees Fahrenheit.", ("0", "100", "212")),
    ("How many legs does a spider have?", "Eight",
     "A spider has eight legs.", ("Six", "Ten", "Four")),
    ("What is the natural satellite of the Earth called?", "The Moon",
     "The Earth's natural satellite is the Moon.", ("Phobos", "Titan", "Europa")),
    ("What is the square root of 81?", "9",
     "The square root of 81 is 9, because 9 times 9 is 81.", ("8", "7", "11")),
    ("Which organ pumps blood around the human body?", "The heart",
     "The heart is the organ that pumps blood around the human body.", ("The liver", "The lungs", "The kidneys")),
)
