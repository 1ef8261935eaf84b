#!/usr/bin/env python3
"""Generate tinytrans' synthetic English->German parallel corpus.

Usage:
    python corpora/make_en_de.py [--seed 1] [--out corpora/en-de]

writes train.{en,de} (30,000 pairs), valid.{en,de} (1,000) and
test.{en,de} (1,000), one sentence per line, UTF-8.

Why a synthetic corpus?
    Real corpora are large, noisy and slow to learn from.  This one is small,
    clean and *deterministic*: every English sentence has exactly one German
    translation, produced by the rules below, so a tiny model can learn it to
    a high BLEU score in minutes -- but only if it learns to reorder and to
    inflect, which is what attention is for.

The grammar
    A sentence is built from one or two *clauses*.  A clause is a plan:

        subject  verb  [objects]  [predicate]  [prepositional phrases]  [time]

    and the same plan is *rendered* twice, once in English word order and
    once in German word order.  German is a verb-second (V2) language with
    a "sentence bracket":

        Vorfeld | finite verb | Mittelfeld ............... | verb rest
        Heute   | hat         | der Mann ein rotes Auto     | gekauft .

    * Main clauses: the finite verb is the second element.  The first
      element (Vorfeld) is the subject, a time adverb ("Heute kauft der
      Mann ..."), a location ("Im Park schläft der Hund.") or a whole
      subordinate clause ("Weil die Frau krank ist, ruft der Mann ...").
    * Yes/no questions put the finite verb first; wh-questions put the
      question word (wer, wen, wem, was, wo, wann, warum) first.
    * Subordinate clauses (weil, obwohl, dass) put *all* verbs at the end:
      "..., weil die Frau den Hund gesehen hat."
    * The "verb rest" at the end of a main clause is the participle of the
      perfect tense (English simple past is rendered as German Perfekt with
      haben or sein), the infinitive after a modal verb (kann, muss, will)
      or the prefix of a separable verb ("ruft ... an").
    * Inside the Mittelfeld the order is fixed: subject, pronoun objects,
      time, definite objects, with/for-phrases, location, indefinite
      objects, direction, predicate.  English keeps its own order:
      objects, direction, location, with/for-phrases, time.

    Noun phrases agree in gender (m/f/n), number and case (nominative,
    accusative, dative).  Articles: der/ein/possessives; adjectives take
    weak endings after der, mixed endings after ein/mein/..., and strong
    endings with no article (numbers, bare plurals).  Prepositions govern
    their case: mit/von/zu/aus + dative, für/ohne/durch + accusative,
    in/auf/an + dative for a location, in + accusative for a direction
    ("into").  Articles contract where German requires it: zum, zur, vom,
    im, ins, am.

Design rules that keep the translation unique
    * one German word per English word sense (no random synonyms);
    * English simple present -> German present, English simple past ->
      German Perfekt (only "be" uses the simple past: war/waren); "read"
      is used in the past only with 3rd person singular subjects, since
      "I read" would be ambiguous;
    * no "you" (du/ihr/Sie) and no "it" (er/sie/es);
    * the generator checks that no English sentence is ever produced with
      two different German translations.

Everything is driven by one random.Random(seed); the output is identical
for the same seed on every run and platform.
"""

import argparse
import os
import random

# ===========================================================================
# 1. Lexicon
# ===========================================================================


class Noun:
    """A noun with English and German forms.

    tags say what the noun is (person, animal, food, ...) and where it can
    appear (``in`` = location "in the X", ``into`` = direction, ``surface``
    = "on the X", ...).  ``weak`` is the accusative/dative singular of the
    few "weak" masculine nouns (der Junge -> den Jungen).
    """

    def __init__(self, en, en_pl, de, gender, de_pl, tags, weak=None):
        self.en, self.en_pl = en, en_pl
        self.de, self.gender, self.de_pl = de, gender, de_pl
        self.tags = frozenset(tags.split())
        self.weak = weak

    def has_plural(self):
        return self.de_pl is not None

    def german(self, case, plural):
        if plural:
            # dative plural adds -n unless the plural ends in -n or -s
            if case == "dat" and not self.de_pl.endswith(("n", "s")):
                return self.de_pl + "n"
            return self.de_pl
        if case != "nom" and self.weak:
            return self.weak
        return self.de


N = Noun
NOUNS = [
    # --- people ------------------------------------------------------------
    N("man", "men", "Mann", "m", "Männer", "person"),
    N("woman", "women", "Frau", "f", "Frauen", "person"),
    N("child", "children", "Kind", "n", "Kinder", "person"),
    N("boy", "boys", "Junge", "m", "Jungen", "person", weak="Jungen"),
    N("girl", "girls", "Mädchen", "n", "Mädchen", "person"),
    N("teacher", "teachers", "Lehrer", "m", "Lehrer", "person"),
    N("doctor", "doctors", "Arzt", "m", "Ärzte", "person"),
    N("student", "students", "Student", "m", "Studenten", "person", weak="Studenten"),
    N("friend", "friends", "Freund", "m", "Freunde", "person"),
    N("neighbour", "neighbours", "Nachbar", "m", "Nachbarn", "person", weak="Nachbarn"),
    N("cook", "cooks", "Koch", "m", "Köche", "person"),
    N("farmer", "farmers", "Bauer", "m", "Bauern", "person", weak="Bauern"),
    N("king", "kings", "König", "m", "Könige", "person"),
    N("queen", "queens", "Königin", "f", "Königinnen", "person"),
    N("waiter", "waiters", "Kellner", "m", "Kellner", "person"),
    N("baker", "bakers", "Bäcker", "m", "Bäcker", "person"),
    N("sister", "sisters", "Schwester", "f", "Schwestern", "person"),
    N("brother", "brothers", "Bruder", "m", "Brüder", "person"),
    N("mother", "mothers", "Mutter", "f", "Mütter", "person"),
    N("father", "fathers", "Vater", "m", "Väter", "person"),
    N("customer", "customers", "Kunde", "m", "Kunden", "person", weak="Kunden"),
    N("guest", "guests", "Gast", "m", "Gäste", "person"),
    # --- animals -----------------------------------------------------------
    N("dog", "dogs", "Hund", "m", "Hunde", "animal washable"),
    N("cat", "cats", "Katze", "f", "Katzen", "animal"),
    N("horse", "horses", "Pferd", "n", "Pferde", "animal washable"),
    N("bird", "birds", "Vogel", "m", "Vögel", "animal bird flyer"),
    N("mouse", "mice", "Maus", "f", "Mäuse", "animal"),
    N("cow", "cows", "Kuh", "f", "Kühe", "animal"),
    N("lion", "lions", "Löwe", "m", "Löwen", "animal", weak="Löwen"),
    N("bear", "bears", "Bär", "m", "Bären", "animal", weak="Bären"),
    N("duck", "ducks", "Ente", "f", "Enten", "animal"),
    # --- things ------------------------------------------------------------
    N("book", "books", "Buch", "n", "Bücher", "thing readable writable openable gift sendable tale"),
    N("letter", "letters", "Brief", "m", "Briefe", "thing readable writable openable sendable"),
    N("ball", "balls", "Ball", "m", "Bälle", "thing gift"),
    N("bag", "bags", "Tasche", "f", "Taschen", "thing gift openable container"),
    N("key", "keys", "Schlüssel", "m", "Schlüssel", "thing"),
    N("picture", "pictures", "Bild", "n", "Bilder", "thing gift sendable"),
    N("lamp", "lamps", "Lampe", "f", "Lampen", "thing gift"),
    N("phone", "phones", "Telefon", "n", "Telefone", "thing gift"),
    N("computer", "computers", "Computer", "m", "Computer", "thing gift"),
    N("newspaper", "newspapers", "Zeitung", "f", "Zeitungen", "thing readable"),
    N("clock", "clocks", "Uhr", "f", "Uhren", "thing gift"),
    N("flower", "flowers", "Blume", "f", "Blumen", "thing flower gift sendable"),
    N("gift", "gifts", "Geschenk", "n", "Geschenke", "thing openable sendable"),
    N("cup", "cups", "Tasse", "f", "Tassen", "thing gift washable"),
    N("glass", "glasses", "Glas", "n", "Gläser", "thing washable"),
    N("box", "boxes", "Kiste", "f", "Kisten", "thing openable container"),
    N("umbrella", "umbrellas", "Regenschirm", "m", "Regenschirme", "thing gift"),
    N("hat", "hats", "Hut", "m", "Hüte", "clothes gift"),
    N("coat", "coats", "Mantel", "m", "Mäntel", "clothes gift washable"),
    N("shoe", "shoes", "Schuh", "m", "Schuhe", "clothes"),
    N("dress", "dresses", "Kleid", "n", "Kleider", "clothes gift washable"),
    N("song", "songs", "Lied", "n", "Lieder", "writable tale"),
    N("story", "stories", "Geschichte", "f", "Geschichten", "readable writable tale"),
    N("film", "films", "Film", "m", "Filme", "film tale"),
    # furniture and fixtures (also used for "on the ..." / "at the ...")
    N("table", "tables", "Tisch", "m", "Tische", "furniture surface at"),
    N("chair", "chairs", "Stuhl", "m", "Stühle", "furniture surface"),
    N("bed", "beds", "Bett", "n", "Betten", "furniture surface"),
    N("sofa", "sofas", "Sofa", "n", "Sofas", "furniture surface"),
    N("window", "windows", "Fenster", "n", "Fenster", "fixture openable at"),
    N("door", "doors", "Tür", "f", "Türen", "fixture openable at"),
    # --- vehicles ----------------------------------------------------------
    N("car", "cars", "Auto", "n", "Autos", "vehicle ownable washable"),
    N("bicycle", "bicycles", "Fahrrad", "n", "Fahrräder", "vehicle ownable washable"),
    N("taxi", "taxis", "Taxi", "n", "Taxis", "vehicle transport"),
    N("bus", "buses", "Bus", "m", "Busse", "vehicle transport"),
    N("train", "trains", "Zug", "m", "Züge", "vehicle transport"),
    N("plane", "planes", "Flugzeug", "n", "Flugzeuge", "vehicle transport flyer"),
    N("ship", "ships", "Schiff", "n", "Schiffe", "vehicle transport"),
    # --- food and drink (drinks are used in the singular only) ---------------
    N("apple", "apples", "Apfel", "m", "Äpfel", "food"),
    N("pear", "pears", "Birne", "f", "Birnen", "food"),
    N("banana", "bananas", "Banane", "f", "Bananen", "food"),
    N("tomato", "tomatoes", "Tomate", "f", "Tomaten", "food"),
    N("cake", "cakes", "Kuchen", "m", "Kuchen", "food"),
    N("pizza", "pizzas", "Pizza", "f", "Pizzen", "food"),
    N("egg", "eggs", "Ei", "n", "Eier", "food cookable"),
    N("potato", "potatoes", "Kartoffel", "f", "Kartoffeln", "food cookable"),
    N("sausage", "sausages", "Wurst", "f", "Würste", "food cookable"),
    N("soup", "soups", "Suppe", "f", "Suppen", "food cookable"),
    N("coffee", None, "Kaffee", "m", None, "drink cookable"),
    N("tea", None, "Tee", "m", None, "drink cookable"),
    N("juice", None, "Saft", "m", None, "drink"),
    N("beer", None, "Bier", "n", None, "drink"),
    # --- places (used in the singular) ---------------------------------------
    # in = "in the X" (location), into = "into the X", goal = "to the X",
    # outof = "out of the X", through = "through the X", at = "at the X"
    N("park", "parks", "Park", "m", "Parks", "place in into goal through"),
    N("garden", "gardens", "Garten", "m", "Gärten", "place in into goal through outof"),
    N("house", "houses", "Haus", "n", "Häuser", "place in into goal outof tidy"),
    N("city", "cities", "Stadt", "f", "Städte", "place in into goal through town visit"),
    N("village", "villages", "Dorf", "n", "Dörfer", "place in into goal through town visit"),
    N("forest", "forests", "Wald", "m", "Wälder", "place in into goal through outof"),
    N("street", "streets", "Straße", "f", "Straßen", "place surface through"),
    N("school", "schools", "Schule", "f", "Schulen", "place in into goal outof"),
    N("kitchen", "kitchens", "Küche", "f", "Küchen", "place in into outof tidy"),
    N("room", "rooms", "Zimmer", "n", "Zimmer", "place in into outof tidy"),
    N("office", "offices", "Büro", "n", "Büros", "place in into outof tidy"),
    N("restaurant", "restaurants", "Restaurant", "n", "Restaurants", "place in into goal outof"),
    N("supermarket", "supermarkets", "Supermarkt", "m", "Supermärkte", "place in into goal outof"),
    N("hotel", "hotels", "Hotel", "n", "Hotels", "place in into goal outof"),
    N("station", "stations", "Bahnhof", "m", "Bahnhöfe", "place in into goal at stop"),
    N("church", "churches", "Kirche", "f", "Kirchen", "place in into goal outof visit"),
    N("library", "libraries", "Bibliothek", "f", "Bibliotheken", "place in into goal outof visit"),
    N("museum", "museums", "Museum", "n", "Museen", "place in into goal outof visit"),
    N("hospital", "hospitals", "Krankenhaus", "n", "Krankenhäuser", "place in into goal outof"),
]


class Adjective:
    """An adjective; ``stem`` is the German stem used before endings
    (teuer -> ein teures Auto)."""

    def __init__(self, en, de, tags, stem=None):
        self.en, self.de = en, de
        self.tags = frozenset(tags.split())   # noun tags it can describe
        self.stem = stem or de

    def fits(self, noun_tags):
        return bool(self.tags & noun_tags)


COLOUR = "thing clothes vehicle furniture fixture flower"
ALL_THINGS = "thing clothes vehicle furniture fixture"
ADJECTIVES = [
    Adjective("red", "rot", COLOUR),
    Adjective("blue", "blau", COLOUR),
    Adjective("green", "grün", COLOUR),
    Adjective("black", "schwarz", COLOUR + " animal"),
    Adjective("white", "weiß", COLOUR + " animal"),
    Adjective("big", "groß", ALL_THINGS + " person animal place food"),
    Adjective("small", "klein", ALL_THINGS + " person animal place food"),
    Adjective("old", "alt", ALL_THINGS + " person animal place"),
    Adjective("new", "neu", ALL_THINGS + " place"),
    Adjective("young", "jung", "person animal"),
    Adjective("beautiful", "schön", ALL_THINGS + " person animal place"),
    Adjective("expensive", "teuer", "thing clothes ownable furniture food drink", stem="teur"),
    Adjective("cheap", "billig", "thing clothes ownable furniture food drink"),
    Adjective("heavy", "schwer", "thing furniture"),
    Adjective("clean", "sauber", "thing clothes vehicle place fixture"),
    Adjective("dirty", "schmutzig", "thing clothes vehicle place fixture animal"),
    Adjective("fast", "schnell", "vehicle animal"),
    Adjective("slow", "langsam", "vehicle animal"),
    Adjective("happy", "glücklich", "person"),
    Adjective("tired", "müde", "person animal", stem="müd"),
    Adjective("sick", "krank", "person animal"),
    Adjective("hungry", "hungrig", "person animal"),
    Adjective("friendly", "freundlich", "person"),
    Adjective("clever", "klug", "person animal"),
    Adjective("funny", "lustig", "person tale"),
    Adjective("famous", "berühmt", "person"),
    Adjective("warm", "warm", "food drink clothes"),
    Adjective("cold", "kalt", "food drink"),
    Adjective("fresh", "frisch", "food"),
]


class Verb:
    """A verb with English and German forms and its combinatorics.

    en, en3, en_past    English base form, 3rd person singular, past
    de                  German infinitive; a "|" marks a separable prefix
                        ("an|rufen" -> "ruft ... an")
    de3                 German 3rd person singular (of the verb without prefix)
    part                German past participle ("angerufen")
    aux                 auxiliary of the perfect: "haben" or "sein"
    kind                trans (accusative object), dat (dative object),
                        ditrans (dative + accusative), intrans, clause (dass)
    subj, obj, dat_obj  noun tags allowed as subject / objects
    loc, dirs, com      prepositional phrases it can take (see PP_SPECS)
    de1                 German 1st person singular if not regular
    particle            English particle that follows a pronoun object
                        ("picks him up")
    modal               False for verbs that sound odd after can/must/want
    """

    def __init__(self, en, en3, en_past, de, de3, part, aux="haben", kind="trans",
                 subj="person", obj="", dat_obj="", loc="", dirs="", com="",
                 de1=None, particle=None, modal=True):
        self.en, self.en3, self.en_past = en, en3, en_past
        self.prefix, _, self.de_stem_inf = de.rpartition("|")
        self.de_inf = self.prefix + self.de_stem_inf      # "anrufen"
        self.de3, self.part, self.aux, self.kind = de3, part, aux, kind
        self.subj = frozenset(subj.split())
        self.obj = frozenset(obj.split())
        self.dat_obj = frozenset(dat_obj.split())
        self.loc, self.dirs, self.com = loc.split(), dirs.split(), com.split()
        self.particle = particle
        self.modal = modal
        if de1 is None:   # ich kaufe, ich füttere
            inf = self.de_stem_inf
            de1 = inf[:-1] + "e" if inf.endswith(("ern", "eln")) else inf[:-2] + "e"
        self.de1 = de1

    def german_present(self, agr):
        return {"sg1": self.de1, "sg3": self.de3, "pl": self.de_stem_inf}[agr]

    def english_present(self, agr):
        return self.en3 if agr == "sg3" else self.en


V = Verb
THINGS = "thing clothes food drink flower"
VERBS = [
    # --- transitive verbs (accusative object) -------------------------------
    V("buy", "buys", "bought", "kaufen", "kauft", "gekauft",
      obj=THINGS + " furniture ownable", loc="in", com="for with"),
    V("see", "sees", "saw", "sehen", "sieht", "gesehen", subj="person animal",
      obj="person animal vehicle thing clothes", loc="in at"),
    V("read", "reads", "read", "lesen", "liest", "gelesen",
      obj="readable", loc="in on at", com="with for"),
    V("write", "writes", "wrote", "schreiben", "schreibt", "geschrieben",
      obj="writable", loc="in at", com="for with"),
    V("eat", "eats", "ate", "essen", "isst", "gegessen", subj="person animal",
      obj="food", loc="in at", com="with"),
    V("drink", "drinks", "drank", "trinken", "trinkt", "getrunken",
      obj="drink", loc="in at", com="with"),
    V("find", "finds", "found", "finden", "findet", "gefunden", subj="person animal",
      obj="thing clothes animal", loc="in on"),
    V("need", "needs", "needed", "brauchen", "braucht", "gebraucht",
      obj="thing clothes ownable furniture", modal=False),
    V("look for", "looks for", "looked for", "suchen", "sucht", "gesucht",
      subj="person animal", obj="thing clothes animal person", loc="in", com="with"),
    V("visit", "visits", "visited", "besuchen", "besucht", "besucht",
      obj="person visit", com="with without"),
    V("know", "knows", "knew", "kennen", "kennt", "gekannt", obj="person",
      modal=False),
    V("ask", "asks", "asked", "fragen", "fragt", "gefragt", obj="person", loc="in"),
    V("cook", "cooks", "cooked", "kochen", "kocht", "gekocht",
      obj="cookable", loc="in", com="for with"),
    V("open", "opens", "opened", "öffnen", "öffnet", "geöffnet", obj="openable"),
    V("wash", "washes", "washed", "waschen", "wäscht", "gewaschen",
      obj="washable", loc="in", com="with"),
    V("bring", "brings", "brought", "bringen", "bringt", "gebracht",
      obj="thing food drink clothes", dirs="to into out_of", com="for"),
    V("meet", "meets", "met", "treffen", "trifft", "getroffen", obj="person", loc="in at"),
    V("receive", "receives", "received", "bekommen", "bekommt", "bekommen",
      obj="gift sendable", com="from"),
    # separable transitive verbs
    V("call", "calls", "called", "an|rufen", "ruft", "angerufen", obj="person",
      loc="in"),
    V("invite", "invites", "invited", "ein|laden", "lädt", "eingeladen", obj="person",
      de1="lade"),
    V("pick up", "picks up", "picked up", "ab|holen", "holt", "abgeholt", obj="person",
      dirs="from", particle="up"),
    V("watch", "watches", "watched", "an|schauen", "schaut", "angeschaut", obj="film",
      loc="in", com="with"),
    V("tidy", "tidies", "tidied", "auf|räumen", "räumt", "aufgeräumt", obj="tidy",
      com="with without"),
    # --- verbs with a dative object ------------------------------------------
    V("help", "helps", "helped", "helfen", "hilft", "geholfen", kind="dat",
      dat_obj="person", loc="in"),
    V("thank", "thanks", "thanked", "danken", "dankt", "gedankt", kind="dat",
      dat_obj="person"),
    V("answer", "answers", "answered", "antworten", "antwortet", "geantwortet",
      kind="dat", dat_obj="person"),
    V("follow", "follows", "followed", "folgen", "folgt", "gefolgt", aux="sein",
      kind="dat", subj="person animal", dat_obj="person animal",
      dirs="to into through out_of"),
    # --- ditransitive verbs (dative person + accusative thing) ----------------
    V("give", "gives", "gave", "geben", "gibt", "gegeben", kind="ditrans",
      dat_obj="person", obj="thing food drink clothes"),
    V("show", "shows", "showed", "zeigen", "zeigt", "gezeigt", kind="ditrans",
      dat_obj="person", obj="thing clothes ownable"),
    V("send", "sends", "sent", "schicken", "schickt", "geschickt", kind="ditrans",
      dat_obj="person", obj="sendable"),
    # --- intransitive verbs with haben ----------------------------------------
    V("sleep", "sleeps", "slept", "schlafen", "schläft", "geschlafen", kind="intrans",
      subj="person animal", loc="in on"),
    V("work", "works", "worked", "arbeiten", "arbeitet", "gearbeitet", kind="intrans",
      loc="in at", com="for with"),
    V("play", "plays", "played", "spielen", "spielt", "gespielt", kind="intrans",
      subj="person animal", loc="in on", com="with without"),
    V("wait", "waits", "waited", "warten", "wartet", "gewartet", kind="intrans",
      loc="in at", com="with"),
    V("sing", "sings", "sang", "singen", "singt", "gesungen", kind="intrans",
      subj="person bird", loc="in", com="for with"),
    V("cry", "cries", "cried", "weinen", "weint", "geweint", kind="intrans", loc="in"),
    V("sit", "sits", "sat", "sitzen", "sitzt", "gesessen", kind="intrans",
      subj="person animal", loc="in on at", com="with"),
    # --- intransitive verbs with sein (movement, change of state) -------------
    V("go", "goes", "went", "gehen", "geht", "gegangen", aux="sein", kind="intrans",
      subj="person animal", dirs="to into through out_of", com="with without"),
    V("come", "comes", "came", "kommen", "kommt", "gekommen", aux="sein",
      kind="intrans", subj="person animal", dirs="from into out_of", com="with"),
    V("drive", "drives", "drove", "fahren", "fährt", "gefahren", aux="sein",
      kind="intrans", dirs="to into through out_of", com="with without"),
    V("run", "runs", "ran", "laufen", "läuft", "gelaufen", aux="sein", kind="intrans",
      subj="person animal", dirs="to into through out_of", com="with"),
    V("fly", "flies", "flew", "fliegen", "fliegt", "geflogen", aux="sein",
      kind="intrans", subj="person flyer", dirs="to into through"),
    V("stay", "stays", "stayed", "bleiben", "bleibt", "geblieben", aux="sein",
      kind="intrans", subj="person animal", loc="in", com="with"),
    V("arrive", "arrives", "arrived", "an|kommen", "kommt", "angekommen", aux="sein",
      kind="intrans", subj="person transport", loc="in:town at:stop"),
    V("depart", "departs", "departed", "ab|fahren", "fährt", "abgefahren", aux="sein",
      kind="intrans", subj="transport", dirs="from:stop"),
    V("fall asleep", "falls asleep", "fell asleep", "ein|schlafen", "schläft",
      "eingeschlafen", aux="sein", kind="intrans", subj="person animal", loc="in on"),
    V("get up", "gets up", "got up", "auf|stehen", "steht", "aufgestanden", aux="sein",
      kind="intrans"),
    # --- verbs taking a dass-clause -------------------------------------------
    V("say", "says", "said", "sagen", "sagt", "gesagt", kind="clause"),
    V("believe", "believes", "believed", "glauben", "glaubt", "geglaubt", kind="clause"),
    V("know", "knows", "knew", "wissen", "weiß", "gewusst", kind="clause", de1="weiß"),
]

# "be" is special everywhere, so it is not a Verb object.
BE_EN = {"present": {"sg1": "am", "sg3": "is", "pl": "are"},
         "past": {"sg1": "was", "sg3": "was", "pl": "were"}}
BE_DE = {"present": {"sg1": "bin", "sg3": "ist", "pl": "sind"},
         "past": {"sg1": "war", "sg3": "war", "pl": "waren"}}
AUX_DE = {"haben": {"sg1": "habe", "sg3": "hat", "pl": "haben"},
          "sein": {"sg1": "bin", "sg3": "ist", "pl": "sind"}}
# modal verbs: English before the infinitive, German finite forms
MODALS = {
    "can": ({"sg1": "can", "sg3": "can", "pl": "can"},
            {"sg1": "kann", "sg3": "kann", "pl": "können"}),
    "must": ({"sg1": "must", "sg3": "must", "pl": "must"},
             {"sg1": "muss", "sg3": "muss", "pl": "müssen"}),
    "want": ({"sg1": "want to", "sg3": "wants to", "pl": "want to"},
             {"sg1": "will", "sg3": "will", "pl": "wollen"}),
}


class Pronoun:
    def __init__(self, en_nom, en_obj, de_nom, de_acc, de_dat, agr):
        self.en_nom, self.en_obj = en_nom, en_obj
        self.de = {"nom": de_nom, "acc": de_acc, "dat": de_dat}
        self.agr = agr


PRONOUNS = [
    Pronoun("I", "me", "ich", "mich", "mir", "sg1"),
    Pronoun("he", "him", "er", "ihn", "ihm", "sg3"),
    Pronoun("she", "her", "sie", "sie", "ihr", "sg3"),
    Pronoun("we", "us", "wir", "uns", "uns", "pl"),
    Pronoun("they", "them", "sie", "sie", "ihnen", "pl"),
]
SPEAKERS = PRONOUNS[0], PRONOUNS[3]     # I, we
POSSESSIVES = [("my", "mein"), ("his", "sein"), ("her", "ihr"), ("our", "unser"),
               ("their", "ihr")]

NUMBERS = [("two", "zwei"), ("three", "drei"), ("four", "vier"), ("five", "fünf"),
           ("six", "sechs"), ("seven", "sieben"), ("eight", "acht"), ("nine", "neun"),
           ("ten", "zehn"), ("eleven", "elf"), ("twelve", "zwölf")]

# (English, German, tenses it combines with)
TIMES = [
    ("today", "heute", "present past"),
    ("now", "jetzt", "present"),
    ("tomorrow", "morgen", "present"),
    ("yesterday", "gestern", "past"),
    ("every day", "jeden Tag", "present"),
    ("next week", "nächste Woche", "present"),
    ("last week", "letzte Woche", "past"),
    ("in the morning", "am Morgen", "present past"),
    ("in the evening", "am Abend", "present past"),
    ("on Monday", "am Montag", "present past"),
    ("on Tuesday", "am Dienstag", "present past"),
    ("on Wednesday", "am Mittwoch", "present past"),
    ("on Thursday", "am Donnerstag", "present past"),
    ("on Friday", "am Freitag", "present past"),
    ("on Saturday", "am Samstag", "present past"),
    ("on Sunday", "am Sonntag", "present past"),
]

# English preposition -> (German preposition, case it governs)
PREPOSITIONS = {
    "with": ("mit", "dat"), "from": ("von", "dat"), "to": ("zu", "dat"),
    "out_of": ("aus", "dat"),
    "for": ("für", "acc"), "without": ("ohne", "acc"), "through": ("durch", "acc"),
    "in": ("in", "dat"), "on": ("auf", "dat"), "at": ("an", "dat"),   # location
    "into": ("in", "acc"),                                             # direction
}
# which nouns a preposition takes by default (a verb may say "in:town")
PP_NOUNS = {
    "with": "person animal", "without": "person animal", "for": "person",
    "from": "person goal", "to": "person goal", "into": "into", "out_of": "outof",
    "through": "through", "in": "in", "on": "surface", "at": "at",
}
# preposition + definite article -> obligatory contraction
CONTRACTIONS = {("zu", "dem"): "zum", ("zu", "der"): "zur", ("von", "dem"): "vom",
                ("in", "dem"): "im", ("in", "das"): "ins", ("an", "dem"): "am"}

CONJUNCTIONS = {"because": "weil", "although": "obwohl", "that": "dass"}

# ===========================================================================
# 2. Morphology: articles and adjective endings
# ===========================================================================

# key: (case, gender) with gender "pl" for all plurals
DEFINITE = {
    ("nom", "m"): "der", ("nom", "f"): "die", ("nom", "n"): "das", ("nom", "pl"): "die",
    ("acc", "m"): "den", ("acc", "f"): "die", ("acc", "n"): "das", ("acc", "pl"): "die",
    ("dat", "m"): "dem", ("dat", "f"): "der", ("dat", "n"): "dem", ("dat", "pl"): "den",
}
# endings of ein / mein / sein / ihr / unser
EIN_ENDING = {
    ("nom", "m"): "", ("nom", "f"): "e", ("nom", "n"): "", ("nom", "pl"): "e",
    ("acc", "m"): "en", ("acc", "f"): "e", ("acc", "n"): "", ("acc", "pl"): "e",
    ("dat", "m"): "em", ("dat", "f"): "er", ("dat", "n"): "em", ("dat", "pl"): "en",
}
# adjective endings after der/die/das (weak declension)
WEAK = {
    ("nom", "m"): "e", ("nom", "f"): "e", ("nom", "n"): "e", ("nom", "pl"): "en",
    ("acc", "m"): "en", ("acc", "f"): "e", ("acc", "n"): "e", ("acc", "pl"): "en",
    ("dat", "m"): "en", ("dat", "f"): "en", ("dat", "n"): "en", ("dat", "pl"): "en",
}
# adjective endings after ein/mein/... (mixed declension)
MIXED = {
    ("nom", "m"): "er", ("nom", "f"): "e", ("nom", "n"): "es", ("nom", "pl"): "en",
    ("acc", "m"): "en", ("acc", "f"): "e", ("acc", "n"): "es", ("acc", "pl"): "en",
    ("dat", "m"): "en", ("dat", "f"): "en", ("dat", "n"): "en", ("dat", "pl"): "en",
}
# adjective endings without an article (strong declension)
STRONG = {
    ("nom", "m"): "er", ("nom", "f"): "e", ("nom", "n"): "es", ("nom", "pl"): "e",
    ("acc", "m"): "en", ("acc", "f"): "e", ("acc", "n"): "es", ("acc", "pl"): "e",
    ("dat", "m"): "em", ("dat", "f"): "er", ("dat", "n"): "em", ("dat", "pl"): "en",
}

# ===========================================================================
# 3. Phrases.  Every builder returns a Phrase: an (english, german) pair plus
#    the little grammatical information the clause needs.
# ===========================================================================


class Phrase:
    def __init__(self, en, de, agr="sg3", pronoun=None, definite=True, noun=None,
                 adjective=None):
        self.en, self.de = en, de
        self.adjective = adjective
        self.agr = agr            # verb agreement of a subject: sg1, sg3, pl
        self.pronoun = pronoun    # a Pronoun, or None; pronouns come first in the Mittelfeld
        self.definite = definite  # definite objects come before adverbials
        self.noun = noun          # head noun (None for pronouns)

    def pair(self):
        return self.en, self.de


def choose(rng, weighted):
    """Pick from a list of (item, weight) pairs."""
    items = [item for item, _ in weighted]
    weights = [w for _, w in weighted]
    return rng.choices(items, weights=weights)[0]


def a_or_an(word):
    return "an" if word[0] in "aeiou" else "a"


def noun_phrase(noun, case, det, adjective=None, possessive=None, number=None):
    """Build a noun phrase.

    det is one of: "the", "a", "poss" (my/his/...), "the_pl", "poss_pl",
    "num" (two ... twelve, plural) or "bare" (plural without article).
    """
    plural = det in ("the_pl", "poss_pl", "num", "bare")
    g = "pl" if plural else noun.gender
    key = (case, g)
    en_noun = noun.en_pl if plural else noun.en
    de_noun = noun.german(case, plural)

    if det in ("the", "the_pl"):
        en_det, de_det, endings = "the", DEFINITE[key], WEAK
    elif det == "a":
        en_det, de_det, endings = None, "ein" + EIN_ENDING[key], MIXED
    elif det in ("poss", "poss_pl"):
        en_det, de_det, endings = possessive[0], possessive[1] + EIN_ENDING[key], MIXED
    elif det == "num":
        en_det, de_det, endings = number[0], number[1], STRONG
    else:  # bare plural
        en_det, de_det, endings = None, None, STRONG

    en_words = [adjective.en] if adjective else []
    en_words.append(en_noun)
    if det == "a":
        en_det = a_or_an(en_words[0])
    de_words = [adjective.stem + endings[key]] if adjective else []
    de_words.append(de_noun)
    if en_det:
        en_words.insert(0, en_det)
    if de_det:
        de_words.insert(0, de_det)
    return Phrase(" ".join(en_words), " ".join(de_words), agr="pl" if plural else "sg3",
                  definite=det in ("the", "the_pl", "poss", "poss_pl"), noun=noun,
                  adjective=adjective)


def pronoun_phrase(pronoun, case):
    en = pronoun.en_nom if case == "nom" else pronoun.en_obj
    return Phrase(en, pronoun.de[case], agr=pronoun.agr, pronoun=pronoun)


def prepositional_phrase(prep_en, np):
    """mit + dem Hund -> mit dem Hund; zu + dem Bahnhof -> zum Bahnhof."""
    prep_de, _ = PREPOSITIONS[prep_en]
    article, _, rest = np.de.partition(" ")
    short = None if np.pronoun else CONTRACTIONS.get((prep_de, article))
    de = short + " " + rest if short else prep_de + " " + np.de
    return Phrase(prep_en.replace("_", " ") + " " + np.en, de)


# --- random choices for noun phrases ------------------------------------------

DETS_SUBJECT = [("the", 40), ("a", 18), ("poss", 12), ("the_pl", 12), ("poss_pl", 5),
                ("num", 10)]
DETS_OBJECT = DETS_SUBJECT + [("bare", 5)]
DETS_PLACE = [("the", 75), ("a", 10), ("poss", 15)]
P_ADJECTIVE = 0.35


def nouns_with(tags):
    return [n for n in NOUNS if n.tags & tags]


def random_noun_phrase(rng, tags, case, dets=DETS_OBJECT):
    noun = rng.choice(nouns_with(tags))
    if "place" in noun.tags or (dets is DETS_PLACE and not noun.tags & {"person", "animal"}):
        dets = DETS_PLACE
    if not noun.has_plural():
        dets = [(d, w) for d, w in dets if d in ("the", "a", "poss")]
    det = choose(rng, dets)
    adjective = None
    if rng.random() < P_ADJECTIVE:
        adjective = rng.choice([a for a in ADJECTIVES if a.fits(noun.tags)])
    return noun_phrase(noun, case, det, adjective,
                       possessive=rng.choice(POSSESSIVES),
                       number=rng.choice(NUMBERS))


def random_person_or_pronoun(rng, tags, case, p_pronoun, avoid=(), dets=None):
    """A noun phrase, or (for people) sometimes a personal pronoun."""
    if "person" in tags and rng.random() < p_pronoun:
        pronoun = rng.choice([p for p in PRONOUNS if p not in avoid])
        return pronoun_phrase(pronoun, case)
    if dets is None:
        dets = DETS_SUBJECT if case == "nom" else DETS_OBJECT
    return random_noun_phrase(rng, tags, case, dets)


def random_pp(rng, spec, avoid=()):
    """spec is a preposition ("with") or preposition:tag ("in:town")."""
    prep, _, tag = spec.partition(":")
    tags = frozenset((tag or PP_NOUNS[prep]).split())
    case = PREPOSITIONS[prep][1]
    # people and animals may be plural ("with two dogs"), places are singular
    dets = DETS_PLACE if prep in ("in", "on", "at", "into", "out_of", "through", "from") \
        else DETS_SUBJECT
    np = random_person_or_pronoun(rng, tags, case, p_pronoun=0.1, avoid=avoid, dets=dets)
    return prepositional_phrase(prep, np)


def random_time(rng, tense):
    en, de, tenses = rng.choice([t for t in TIMES if tense in t[2].split()])
    return Phrase(en, de)


# ===========================================================================
# 4. Clauses
# ===========================================================================


class Clause:
    """The language-neutral plan of one clause.

    verb is a Verb, or "be" for the copula (with ``pred`` an adjective or a
    location in ``loc``).  Rendering functions below turn it into English
    and German words for the different clause types.
    """

    def __init__(self, subj, verb, tense="present", modal=None):
        self.subj, self.verb, self.tense, self.modal = subj, verb, tense, modal
        self.acc = self.dat = self.pred = self.time = None
        self.com, self.loc, self.dir = [], [], []

    @property
    def kind(self):
        return "be" if self.verb == "be" else self.verb.kind


# clause kinds and how often they are chosen
CLAUSE_KINDS = [("trans", 34), ("dat", 6), ("ditrans", 6), ("intrans", 28),
                ("be_adj", 12), ("be_loc", 5)]


def random_clause(rng, need=None, tense=None, allow_modal=True, max_pps=2, p_time=0.35):
    """Build a random clause plan.

    need asks for an element a question will extract: "acc", "dat", "loc",
    "time"; tense can be forced (used for "said that ... bought").
    """
    kinds = CLAUSE_KINDS
    if need == "acc":
        kinds = [("trans", 5), ("ditrans", 1)]
    elif need == "dat":
        kinds = [("dat", 1)]
    elif need == "loc":
        kinds = [("trans", 3), ("intrans", 3), ("be_loc", 2)]
    kind = choose(rng, kinds)
    if kind.startswith("be"):
        verb = "be"
    else:
        verbs = [v for v in VERBS if v.kind == kind]
        if need == "loc":
            verbs = [v for v in verbs if v.loc]
        verb = rng.choice(verbs)

    # subject
    if verb == "be":
        if rng.random() < 0.6:
            subj_tags = frozenset(["person", "animal"])
        elif kind == "be_adj":
            subj_tags = frozenset(["thing", "clothes", "vehicle", "food"])
        else:
            subj_tags = frozenset(["thing", "clothes", "vehicle"])
    else:
        subj_tags = verb.subj
    subj = random_person_or_pronoun(rng, subj_tags, "nom", p_pronoun=0.18)

    # tense and modal
    if tense is None:
        tense = "past" if rng.random() < 0.4 else "present"
    if verb != "be" and verb.en_past == verb.en and subj.agr != "sg3":
        tense = "present"          # "I read" would be ambiguous
    modal = None
    if verb != "be" and verb.modal and tense == "present" and allow_modal \
            and rng.random() < 0.12:
        modal = choose(rng, [("can", 2), ("must", 1), ("want", 2)])
    cl = Clause(subj, verb, tense, modal)

    # avoid "I see me", "we help us", "I know us" (German would need "mich selbst")
    avoid = SPEAKERS if subj.pronoun in SPEAKERS else ()

    # objects and predicates
    if kind == "trans":
        if need == "acc":  # extracted objects are always nouns
            cl.acc = random_noun_phrase(rng, verb.obj, "acc")
        else:
            cl.acc = random_person_or_pronoun(rng, verb.obj, "acc", 0.15, avoid)
    elif kind == "dat":
        p = 0.0 if need == "dat" else 0.15
        tags = frozenset(["person"]) if need == "dat" else verb.dat_obj
        cl.dat = random_person_or_pronoun(rng, tags, "dat", p, avoid)
    elif kind == "ditrans":
        cl.dat = random_person_or_pronoun(rng, verb.dat_obj, "dat", 0.2, avoid)
        cl.acc = random_noun_phrase(rng, verb.obj, "acc")
    elif kind == "be_adj":
        noun_tags = subj.noun.tags if subj.noun else frozenset(["person"])
        adj = rng.choice([a for a in ADJECTIVES if a.fits(noun_tags)
                          and a is not subj.adjective])    # not "the old man is old"
        cl.pred = Phrase(adj.en, adj.de)
    elif kind == "be_loc":
        if subj_tags & {"person", "animal"}:
            spec = choose(rng, [("in", 6), ("at", 2), ("on", 1)])
        else:
            spec = choose(rng, [("in", 3), ("on", 3), ("in:container", 2)])
        cl.loc.append(random_pp(rng, spec, avoid))

    # prepositional phrases
    if verb != "be":
        n_pps = min(choose(rng, [(0, 35), (1, 45), (2, 20)]), max_pps)
        # at most one phrase per slot; directions are preferred for verbs of motion
        slots = [(slot, w) for slot, specs, w in (("dir", verb.dirs, 3), ("loc", verb.loc, 2),
                                                   ("com", verb.com, 2)) if specs]
        if need == "loc":
            n_pps = max(0, n_pps - 1)    # the extracted phrase counts
            cl.loc.append(random_pp(rng, rng.choice(verb.loc), avoid))
            slots = [(slot, w) for slot, w in slots if slot != "loc"]
        chosen = []
        while slots and len(chosen) < n_pps:
            slot = choose(rng, slots)
            chosen.append(slot)
            slots = [(s, w) for s, w in slots if s != slot]
        for slot in chosen:
            if slot == "com":
                cl.com.append(random_pp(rng, rng.choice(verb.com), avoid))
            elif slot == "loc":
                cl.loc.append(random_pp(rng, rng.choice(verb.loc), avoid))
            else:
                cl.dir.append(random_pp(rng, rng.choice(verb.dirs), avoid))

    # time adverb
    if need == "time" or rng.random() < p_time:
        cl.time = random_time(rng, tense)
    return cl


# --- rendering: English ---------------------------------------------------------

def english_verb(cl, agr, question):
    """Return (auxiliary that goes before the subject or None, verb words)."""
    v = cl.verb
    if v == "be":
        form = BE_EN[cl.tense][agr]
        return (form, []) if question else (None, [form])
    if cl.modal:
        en_modal = MODALS[cl.modal][0][agr]
        if question and cl.modal == "want":
            return ("does" if agr == "sg3" else "do", ["want to", v.en])
        if question:
            return en_modal, [v.en]
        return None, [en_modal, v.en]
    if question:
        if cl.tense == "past":
            return "did", [v.en]
        return ("does" if agr == "sg3" else "do"), [v.en]
    return None, [v.en_past if cl.tense == "past" else v.english_present(agr)]


def english_rest(cl, verb_words, omit=()):
    """English verb words + everything after the verb."""
    words = list(verb_words)
    acc = cl.acc if "acc" not in omit else None
    dat = cl.dat if "dat" not in omit else None
    if dat:
        words.append(dat.en)
    if acc:
        particle = cl.verb.particle
        if particle and acc.pronoun and words and words[-1].endswith(" " + particle):
            # "picks up the child" but "picks him up"
            words[-1] = words[-1][: -len(particle) - 1]
            words += [acc.en, particle]
        else:
            words.append(acc.en)
    if cl.pred:
        words.append(cl.pred.en)
    words += [p.en for p in cl.dir]
    if "loc" not in omit:
        words += [p.en for p in cl.loc]
    words += [p.en for p in cl.com]
    if cl.time and "time" not in omit:
        words.append(cl.time.en)
    return words


# --- rendering: German -----------------------------------------------------------

def german_verb(cl, agr):
    """Return (finite verb, verb rest for the end of a main clause)."""
    v = cl.verb
    if v == "be":
        return BE_DE[cl.tense][agr], []
    if cl.modal:
        return MODALS[cl.modal][1][agr], [v.de_inf]
    if cl.tense == "past":
        return AUX_DE[v.aux][agr], [v.part]
    return v.german_present(agr), ([v.prefix] if v.prefix else [])


def german_verb_final(cl, agr):
    """All verbs at the end of a subordinate clause: "anruft", "gekauft hat"."""
    finite, rest = german_verb(cl, agr)
    v = cl.verb
    if v != "be" and not cl.modal and cl.tense == "present" and v.prefix:
        return [v.prefix + finite]
    return rest + [finite]


def german_middle(cl, omit=()):
    """The Mittelfeld in its fixed order."""
    words = []
    acc = cl.acc if "acc" not in omit else None
    dat = cl.dat if "dat" not in omit else None
    if "subj" not in omit:
        words.append(cl.subj.de)
    for obj in (acc, dat):                      # pronouns first: "sieht ihn heute"
        if obj and obj.pronoun:
            words.append(obj.de)
    if cl.time and "time" not in omit:
        words.append(cl.time.de)
    late = []
    if cl.kind == "ditrans":                    # dative before accusative
        if dat and not dat.pronoun:
            words.append(dat.de)
        if acc:
            late.append(acc.de)
    else:
        obj = acc or dat
        if obj and not obj.pronoun:
            # known things before adverbials, new things after them
            (words if obj.definite else late).append(obj.de)
    words += [p.de for p in cl.com]
    if "loc" not in omit:
        words += [p.de for p in cl.loc]
    words += late
    words += [p.de for p in cl.dir]
    if cl.pred:
        words.append(cl.pred.de)
    return words


# --- clause types: each returns an (english, german) pair of word strings ----------

def join(words):
    return " ".join(w for w in words if w)


def statement(cl, front=None):
    """Main clause.  front: None (subject first), "time" or "loc"."""
    agr = cl.subj.agr
    _, en_verb = english_verb(cl, agr, question=False)
    finite, rest = german_verb(cl, agr)
    if front is None:
        en = [cl.subj.en] + english_rest(cl, en_verb)
        de = [cl.subj.de, finite] + german_middle(cl, omit=("subj",)) + rest
    elif front == "time":
        en = [cl.time.en, cl.subj.en] + english_rest(cl, en_verb, omit=("time",))
        de = [cl.time.de, finite] + german_middle(cl, omit=("time",)) + rest
    else:  # a single location phrase in front
        en = [cl.loc[0].en, cl.subj.en] + english_rest(cl, en_verb, omit=("loc",))
        de = [cl.loc[0].de, finite] + german_middle(cl, omit=("loc",)) + rest
    return join(en), join(de)


def statement_after_clause(cl):
    """Main clause after a fronted subordinate clause: verb comes first."""
    agr = cl.subj.agr
    _, en_verb = english_verb(cl, agr, question=False)
    finite, rest = german_verb(cl, agr)
    en = [cl.subj.en] + english_rest(cl, en_verb)
    de = [finite] + german_middle(cl) + rest
    return join(en), join(de)


def yes_no_question(cl):
    agr = cl.subj.agr
    en_aux, en_verb = english_verb(cl, agr, question=True)
    finite, rest = german_verb(cl, agr)
    en = [en_aux, cl.subj.en] + english_rest(cl, en_verb)
    de = [finite] + german_middle(cl) + rest
    return join(en), join(de)


WH_WORDS = {"subj": ("who", "wer"), "time": ("when", "wann"), "why": ("why", "warum"),
            "loc": ("where", "wo"), "dat": ("who", "wem")}


def wh_question(cl, target):
    """target: subj (wer), acc (was/wen), dat (wem), loc (wo), time (wann), why."""
    if target == "acc":
        en_wh, de_wh = ("who", "wen") if "person" in cl.acc.noun.tags else ("what", "was")
    else:
        en_wh, de_wh = WH_WORDS[target]
    if target == "subj":   # "Who buys a car?" -- no do-support, verb in 3rd sg.
        _, en_verb = english_verb(cl, "sg3", question=False)
        finite, rest = german_verb(cl, "sg3")
        en = [en_wh] + english_rest(cl, en_verb)
        de = [de_wh, finite] + german_middle(cl, omit=("subj",)) + rest
        return join(en), join(de)
    agr = cl.subj.agr
    en_aux, en_verb = english_verb(cl, agr, question=True)
    finite, rest = german_verb(cl, agr)
    omit = (target,)
    en = [en_wh, en_aux, cl.subj.en] + english_rest(cl, en_verb, omit)
    de = [de_wh, finite] + german_middle(cl, omit) + rest
    return join(en), join(de)


def subordinate(cl, conj):
    """"because the woman sees the dog" / "weil die Frau den Hund sieht"."""
    agr = cl.subj.agr
    _, en_verb = english_verb(cl, agr, question=False)
    en = [conj, cl.subj.en] + english_rest(cl, en_verb)
    de = [CONJUNCTIONS[conj]] + german_middle(cl) + german_verb_final(cl, agr)
    return join(en), join(de)


# ===========================================================================
# 5. Sentences
# ===========================================================================

def capitalize(s):
    return s[0].upper() + s[1:]


def finish(en, de, mark):
    return capitalize(en) + mark, capitalize(de) + mark


def sentence_statement(rng):
    cl = random_clause(rng)
    return finish(*statement(cl), ".")


def sentence_time_first(rng):
    """ "Today the man buys a red car." -> "Heute kauft der Mann ein rotes Auto." """
    cl = random_clause(rng, need="time")
    return finish(*statement(cl, front="time"), ".")


def sentence_place_first(rng):
    """ "In the park the dog sleeps." -> "Im Park schläft der Hund." """
    while True:
        cl = random_clause(rng, need="loc", p_time=0.2)
        if cl.verb != "be":     # not "In the garden the dog is."
            return finish(*statement(cl, front="loc"), ".")


def pick_conjunction(rng):
    return choose(rng, [("because", 3), ("although", 1)])


def sentence_with_subclause(rng):
    """ "The man is happy because the woman sees the dog." """
    main = random_clause(rng, max_pps=1, p_time=0.2)
    sub = random_clause(rng, max_pps=1, p_time=0.2)
    m_en, m_de = statement(main)
    s_en, s_de = subordinate(sub, pick_conjunction(rng))
    return finish(m_en + " " + s_en, m_de + ", " + s_de, ".")


def sentence_subclause_first(rng):
    """ "Because the woman is sick, the man calls the doctor." (verb first) """
    sub = random_clause(rng, max_pps=1, p_time=0.2)
    main = random_clause(rng, max_pps=1, p_time=0.2)
    s_en, s_de = subordinate(sub, pick_conjunction(rng))
    m_en, m_de = statement_after_clause(main)
    return finish(s_en + ", " + m_en, s_de + ", " + m_de, ".")


def sentence_that(rng):
    """ "The woman says that the man bought a car." """
    verb = rng.choice([v for v in VERBS if v.kind == "clause"])
    subj = random_person_or_pronoun(rng, frozenset(["person"]), "nom", p_pronoun=0.25)
    tense = "past" if rng.random() < 0.35 else "present"
    main = Clause(subj, verb, tense)
    sub = random_clause(rng, tense="past" if tense == "past" else None, max_pps=1,
                        p_time=0.2)
    s_en, s_de = subordinate(sub, "that")
    if subj.en not in ("I", "we") and rng.random() < 0.15:
        m_en, m_de = yes_no_question(main)
        return finish(m_en + " " + s_en, m_de + ", " + s_de, "?")
    m_en, m_de = statement(main)
    return finish(m_en + " " + s_en, m_de + ", " + s_de, ".")


def sentence_yes_no(rng):
    """ "Did the man buy a car?" -> "Hat der Mann ein Auto gekauft?" """
    while True:
        cl = random_clause(rng)
        if cl.modal != "must" and cl.subj.agr != "sg1" and cl.subj.en != "we":
            return finish(*yes_no_question(cl), "?")


def sentence_wh(rng):
    """ "Where does the woman read the book?" -> "Wo liest die Frau das Buch?" """
    target = choose(rng, [("subj", 3), ("acc", 4), ("dat", 1), ("loc", 2), ("time", 2),
                          ("why", 2)])
    while True:
        need = {"acc": "acc", "dat": "dat", "loc": "loc"}.get(target)
        cl = random_clause(rng, need=need, p_time=0.0 if target == "time" else 0.25)
        if cl.modal == "must":
            continue
        if target == "subj" and (cl.subj.pronoun or "person" not in cl.subj.noun.tags):
            continue
        if target != "subj" and (cl.subj.agr == "sg1" or cl.subj.en == "we"):
            continue
        return finish(*wh_question(cl, target), "?")


SENTENCE_TYPES = [
    (sentence_statement, 24),
    (sentence_time_first, 12),
    (sentence_place_first, 7),
    (sentence_with_subclause, 12),
    (sentence_subclause_first, 6),
    (sentence_that, 9),
    (sentence_yes_no, 12),
    (sentence_wh, 16),
]


def random_sentence(rng):
    return choose(rng, SENTENCE_TYPES)(rng)


# ===========================================================================
# 6. Corpus
# ===========================================================================

SPLITS = [("train", 30000), ("valid", 1000), ("test", 1000)]


def generate(seed):
    """Return {split: [(en, de), ...]} with all English sentences distinct."""
    rng = random.Random(seed)
    total = sum(n for _, n in SPLITS)
    seen = {}            # english -> german, also checks the mapping is unique
    pairs = []
    attempts = 0
    while len(pairs) < total:
        attempts += 1
        if attempts > 50 * total:
            raise RuntimeError("grammar too small to produce enough distinct sentences")
        en, de = random_sentence(rng)
        if en in seen:
            if seen[en] != de:
                raise AssertionError("ambiguous English sentence: %r -> %r / %r"
                                     % (en, seen[en], de))
            continue
        seen[en] = de
        pairs.append((en, de))
    rng.shuffle(pairs)
    splits, start = {}, 0
    for name, n in SPLITS:
        splits[name] = pairs[start:start + n]
        start += n
    return splits


def write_splits(splits, out):
    os.makedirs(out, exist_ok=True)
    for name, pairs in splits.items():
        for lang, idx in (("en", 0), ("de", 1)):
            path = os.path.join(out, "%s.%s" % (name, lang))
            with open(path, "w", encoding="utf-8", newline="\n") as f:
                for pair in pairs:
                    f.write(pair[idx] + "\n")


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", default=os.path.join(here, "en-de"))
    args = parser.parse_args()
    splits = generate(args.seed)
    write_splits(splits, args.out)
    for name, pairs in splits.items():
        print("%-5s %6d pairs" % (name, len(pairs)))


if __name__ == "__main__":
    main()
